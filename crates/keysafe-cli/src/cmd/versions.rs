//! `keysafe versions NAME`.

use crate::cli::NameArgs;
use crate::cmd::{client_for, deposit_name};
use crate::output;

pub async fn run(args: NameArgs) -> anyhow::Result<()> {
    let name = deposit_name(&args.name)?;
    let (_, client) = client_for(&args.client)?;
    let list = client.versions_of(args.owner.as_deref(), &name).await?;
    if args.client.json {
        return output::json(&list);
    }
    if list.deleted {
        eprintln!("{} is deleted (undelete restores it).", list.name);
    }
    let rows: Vec<Vec<String>> = list
        .versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                v.size.to_string(),
                v.created_at.to_string(),
                v.creator.to_string(),
                v.encoding.as_str().to_owned(),
            ]
        })
        .collect();
    output::table(
        &["VERSION", "STORED BYTES", "CREATED", "CREATOR", "ENCODING"],
        &rows,
    );
    Ok(())
}
