//! `keysafe put NAME [FILE|-]`.

use crate::cli::PutArgs;
use crate::cmd::{client_for, deposit_name, version_arg};
use crate::output;
use anyhow::Context;
use keysafe_client::Precondition;
use std::io::Read;

pub async fn run(args: PutArgs) -> anyhow::Result<()> {
    let name = deposit_name(&args.name)?;
    let pre = match (version_arg(args.if_match)?, args.create_only) {
        (Some(v), _) => Precondition::IfMatch(v),
        (None, true) => Precondition::IfAbsent,
        (None, false) => Precondition::None,
    };
    let (_, client) = client_for(&args.client)?;
    let payload = match args.file.as_deref() {
        None => read_stdin()?,
        Some(p) if p.as_os_str() == "-" => read_stdin()?,
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
    };
    let stored = client.put(&name, payload, pre).await?;
    if args.client.json {
        return output::json(&stored);
    }
    println!(
        "Stored {} version {} ({} bytes).",
        stored.name, stored.version, stored.size
    );
    Ok(())
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("cannot read the payload from standard input")?;
    Ok(buf)
}
