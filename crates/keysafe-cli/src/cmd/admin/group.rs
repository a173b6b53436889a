//! `keysafe admin group add|add-member|remove-member|list|delete`.

use crate::cli::AdminGroupCommand;
use crate::cmd::group::print_group;
use crate::cmd::{fingerprint_arg, group_arg};
use crate::exit::usage;
use crate::output;
use keysafe_client::KeysafeClient;
use keysafe_client::vault::{admin_create_group, admin_remove_member};
use keysafe_proto::OrgName;

fn org(s: &str) -> anyhow::Result<OrgName> {
    OrgName::parse(s).map_err(|e| usage(e.message().to_owned()))
}

pub async fn run(client: &KeysafeClient, cmd: AdminGroupCommand, json: bool) -> anyhow::Result<()> {
    let g = match cmd {
        AdminGroupCommand::Add {
            name,
            org: o,
            members,
        } => {
            let members = members
                .iter()
                .map(|m| fingerprint_arg(m))
                .collect::<anyhow::Result<Vec<_>>>()?;
            admin_create_group(client, &org(&o)?, &group_arg(&name)?, &members).await?
        }
        AdminGroupCommand::AddMember {
            name,
            org: o,
            fingerprint,
        } => {
            let g = client
                .admin_add_member(
                    &org(&o)?,
                    &group_arg(&name)?,
                    &fingerprint_arg(&fingerprint)?,
                )
                .await?;
            if !json {
                eprintln!(
                    "Added. A current member must now run `keysafe group admit {} {fingerprint}` \
                     (a KMS gateway does it by itself).",
                    g.name
                );
            }
            g
        }
        AdminGroupCommand::RemoveMember {
            name,
            org: o,
            fingerprint,
        } => {
            let g = admin_remove_member(
                client,
                &org(&o)?,
                &group_arg(&name)?,
                &fingerprint_arg(&fingerprint)?,
            )
            .await?;
            if !json {
                eprintln!(
                    "Removed; the group identity was rotated (epoch {}) for what is written from \
                     now on. What the removed member fetched before stays readable to it.",
                    g.epoch
                );
            }
            g
        }
        AdminGroupCommand::Delete { name, org: o, yes } => {
            return super::lifecycle::delete_group(
                client,
                &org(&o)?,
                &group_arg(&name)?,
                yes,
                json,
            )
            .await;
        }
        AdminGroupCommand::List { org: o } => {
            let o = o.as_deref().map(org).transpose()?;
            let list = client.admin_groups(o.as_ref()).await?;
            if json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .groups
                .iter()
                .map(|g| {
                    vec![
                        g.org.to_string(),
                        g.name.to_string(),
                        g.epoch.to_string(),
                        g.members.len().to_string(),
                    ]
                })
                .collect();
            output::table(&["ORG", "GROUP", "EPOCH", "MEMBERS"], &rows);
            return Ok(());
        }
    };
    if json {
        return output::json(&g);
    }
    print_group(&g);
    Ok(())
}
