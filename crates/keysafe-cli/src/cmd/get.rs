//! `keysafe get NAME [--version N] [-o FILE]`: raw bytes to stdout, or to a file created with
//! mode 0600 (written to a temporary file first, then renamed into place).

use crate::cli::GetArgs;
use crate::cmd::{client_for, deposit_name, vault_for, version_arg};
use anyhow::Context;
use keysafe_client::{CacheUse, Source};
use std::io::Write;
use std::path::Path;

pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    let name = deposit_name(&args.name)?;
    let version = version_arg(args.version)?;
    let (home, client) = client_for(&args.client)?;
    let cache_use = if args.no_cache {
        CacheUse::Refresh
    } else {
        CacheUse::Normal
    };
    let owner = args.owner.as_deref();
    let fetched = if args.raw {
        let f = client.get_of(owner, &name, version, cache_use).await?;
        keysafe_client::vault::Opened {
            version: f.version,
            encoding: keysafe_proto::api::Encoding::Raw,
            plaintext: zeroize::Zeroizing::new(f.payload.to_vec()),
            source: f.source,
        }
    } else {
        vault_for(&home, client)?
            .get(owner, &name, version, cache_use)
            .await?
    };
    if let Source::Stale { age, reason } = &fetched.source {
        // One line, on stderr, so the payload on stdout stays clean.
        eprintln!(
            "keysafe: warning: serving a cached copy of {name} version {} last confirmed by a server {} ago: {}",
            fetched.version,
            humantime::format_duration(std::time::Duration::from_secs(age.as_secs())),
            reason.replace('\n', " ")
        );
    }
    match &args.output {
        Some(path) if path.as_os_str() != "-" => {
            write_private(path, &fetched.plaintext)?;
            eprintln!(
                "Wrote {} version {} ({} bytes) to {}.",
                name,
                fetched.version,
                fetched.plaintext.len(),
                path.display()
            );
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(&fetched.plaintext)?;
            out.flush()?;
        }
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.keysafe-tmp", file_name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
