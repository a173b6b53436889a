//! `keysafe purge NAME --yes`: destroys every version. Irreversible, so it wants `--yes`.

use crate::cli::PurgeArgs;
use crate::cmd::{client_for, deposit_name};
use crate::exit::usage;
use crate::output;

pub async fn run(args: PurgeArgs) -> anyhow::Result<()> {
    let name = deposit_name(&args.name)?;
    if !args.yes {
        return Err(usage(format!(
            "purge destroys every version of {name} irrecoverably; re-run with --yes to confirm"
        )));
    }
    let (_, client) = client_for(&args.client)?;
    let r = client.purge_of(args.owner.as_deref(), &name).await?;
    if args.client.json {
        return output::json(&r);
    }
    println!(
        "Purged {} ({} versions destroyed).",
        r.name, r.purged_versions
    );
    Ok(())
}
