//! `keysafe rm NAME`: soft delete.

use crate::cli::NameArgs;
use crate::cmd::{client_for, deposit_name};
use crate::output;

pub async fn run(args: NameArgs) -> anyhow::Result<()> {
    let name = deposit_name(&args.name)?;
    let (_, client) = client_for(&args.client)?;
    let info = client.delete_of(args.owner.as_deref(), &name).await?;
    if args.client.json {
        return output::json(&info);
    }
    println!(
        "Deleted {} (keysafe undelete {} restores it; purge destroys it).",
        info.name, info.name
    );
    Ok(())
}
