//! `keysafe completions SHELL` and `keysafe man DIR` (hidden; used when packaging): shell
//! completion scripts and man pages generated from the command-line definition, so they never
//! drift from it.

use crate::cli::Cli;
use anyhow::Context;
use clap::CommandFactory;
use std::path::Path;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use std::io::Write;
    let mut cmd = Cli::command();
    // Generated into memory: the generator panics on a write error (a closed pipe), and a
    // command must fail with a message instead.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "keysafe", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("cannot write the completion script")
}

/// One page per command: `keysafe.1`, `keysafe-admin.1`, `keysafe-admin-org-add.1`, ...
pub fn man(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    let pages = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
        .count();
    eprintln!("Wrote {pages} man pages to {}.", dir.display());
    Ok(())
}
