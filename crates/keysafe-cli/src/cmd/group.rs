//! `keysafe group ls|show|create|admit`: groups this client belongs to.

use crate::cli::GroupCommand;
use crate::cmd::{client_for, fingerprint_arg, group_arg, vault_for};
use crate::output;
use keysafe_proto::api::GroupInfo;

pub(crate) fn print_group(g: &GroupInfo) {
    println!(
        "group {} of {} (epoch {}, recipient {})",
        g.name, g.org, g.epoch, g.recipient
    );
    let rows: Vec<Vec<String>> = g
        .members
        .iter()
        .map(|m| {
            vec![
                m.fingerprint.to_string(),
                if m.has_current_key {
                    "yes".into()
                } else {
                    "no: waits for `keysafe group admit`".into()
                },
            ]
        })
        .collect();
    output::table(&["MEMBER", "HOLDS CURRENT KEY"], &rows);
}

pub async fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::Ls(args) => {
            let (_, client) = client_for(&args)?;
            let list = client.groups().await?;
            if args.json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .groups
                .iter()
                .map(|g| {
                    vec![
                        g.name.to_string(),
                        g.epoch.to_string(),
                        g.members.len().to_string(),
                    ]
                })
                .collect();
            output::table(&["GROUP", "EPOCH", "MEMBERS"], &rows);
            Ok(())
        }
        GroupCommand::Show { name, client: args } => {
            let (_, client) = client_for(&args)?;
            let g = client.group(&group_arg(&name)?).await?;
            if args.json {
                return output::json(&g);
            }
            print_group(&g);
            Ok(())
        }
        GroupCommand::Create {
            name,
            members,
            client: args,
        } => {
            let name = group_arg(&name)?;
            let others = members
                .iter()
                .map(|m| fingerprint_arg(m))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (home, client) = client_for(&args)?;
            let g = vault_for(&home, client)?
                .create_group(&name, &others)
                .await?;
            if args.json {
                return output::json(&g);
            }
            println!("Group {} created.", g.name);
            print_group(&g);
            Ok(())
        }
        GroupCommand::Admit {
            name,
            fingerprint,
            client: args,
        } => {
            let name = group_arg(&name)?;
            let fp = fingerprint_arg(&fingerprint)?;
            let (home, client) = client_for(&args)?;
            let g = vault_for(&home, client)?.admit(&name, &fp).await?;
            if args.json {
                return output::json(&g);
            }
            println!("{fp} now holds the identities of {name} it was missing.");
            Ok(())
        }
    }
}
