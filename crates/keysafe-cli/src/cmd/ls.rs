//! `keysafe ls [PREFIX] [--deleted]`: every page, in name order.

use crate::cli::LsArgs;
use crate::cmd::client_for;
use crate::exit::usage;
use crate::output;
use keysafe_proto::DepositName;
use keysafe_proto::api::{DepositList, ListQuery};

pub async fn run(args: LsArgs) -> anyhow::Result<()> {
    if let Some(p) = &args.prefix {
        DepositName::validate_prefix(p).map_err(|e| usage(e.message().to_owned()))?;
    }
    let (_, client) = client_for(&args.client)?;
    let mut all = Vec::new();
    let mut page_token = None;
    loop {
        let page = client
            .list(&ListQuery {
                prefix: args.prefix.clone(),
                limit: Some(ListQuery::MAX_LIMIT),
                page_token: page_token.take(),
                deleted: args.deleted.then_some(true),
                owner: args.owner.clone(),
            })
            .await?;
        all.extend(page.deposits);
        match page.next_page_token {
            Some(t) => page_token = Some(t),
            None => break,
        }
    }
    if args.client.json {
        return output::json(&DepositList {
            deposits: all,
            next_page_token: None,
        });
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|d| {
            vec![
                d.name.to_string(),
                d.version.to_string(),
                d.size.to_string(),
                d.updated_at.to_string(),
                if d.deleted {
                    "deleted".into()
                } else {
                    "live".into()
                },
            ]
        })
        .collect();
    // Sizes are of the payload as stored: ciphertext for age deposits (a 32-byte key takes
    // about 250 bytes).
    output::table(
        &["NAME", "VERSION", "STORED BYTES", "UPDATED", "STATE"],
        &rows,
    );
    Ok(())
}
