//! `keysafe put NAME [FILE|-]`: encrypted on this host to the deposit's recipients (age), unless
//! `--raw`.

use crate::cli::PutArgs;
use crate::cmd::{client_for, deposit_name, vault_for, version_arg};
use crate::output;
use anyhow::Context;
use keysafe_client::{Precondition, PutParams};
use std::io::Read;

pub async fn run(args: PutArgs) -> anyhow::Result<()> {
    let name = deposit_name(&args.name)?;
    let pre = match (version_arg(args.if_match)?, args.create_only) {
        (Some(v), _) => Precondition::IfMatch(v),
        (None, true) => Precondition::IfAbsent,
        (None, false) => Precondition::None,
    };
    let (home, client) = client_for(&args.client)?;
    let payload = zeroize::Zeroizing::new(match args.file.as_deref() {
        None => read_stdin()?,
        Some(p) if p.as_os_str() == "-" => read_stdin()?,
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
    });
    let owner = args.owner.as_deref();
    let stored = if args.raw {
        client
            .put_with(
                owner,
                &name,
                payload.to_vec(),
                PutParams {
                    precondition: pre,
                    ..PutParams::default()
                },
            )
            .await?
    } else {
        vault_for(&home, client)?
            .put(owner, &name, &payload, pre)
            .await?
    };
    if args.client.json {
        return output::json(&stored);
    }
    println!(
        "Stored {} version {} ({} bytes{}).",
        stored.name,
        stored.version,
        stored.size,
        if args.raw { ", raw" } else { " encrypted" }
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
