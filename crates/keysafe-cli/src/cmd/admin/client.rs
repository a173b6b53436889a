//! `keysafe admin client list|approve|disable|enable|promote|demote|reset-token|
//! disable-unactivated|delete`.

use crate::cli::ClientCommand;
use crate::exit::usage;
use crate::output;
use keysafe_client::KeysafeClient;
use keysafe_proto::api::ClientState;
use keysafe_proto::{ClientFingerprint, OrgName};

fn fingerprint(s: &str) -> anyhow::Result<ClientFingerprint> {
    ClientFingerprint::parse(s).map_err(|e| usage(e.to_string()))
}

pub async fn run(client: &KeysafeClient, cmd: ClientCommand, json: bool) -> anyhow::Result<()> {
    let (fp, action) = match cmd {
        ClientCommand::List {
            org,
            state,
            limit,
            after,
        } => {
            let org = org
                .as_deref()
                .map(OrgName::parse)
                .transpose()
                .map_err(|e| usage(e.message().to_owned()))?;
            let state = state
                .as_deref()
                .map(|s| {
                    ClientState::parse(s).ok_or_else(|| {
                        usage("--state must be pending, active, disabled or suspected-clone")
                    })
                })
                .transpose()?;
            let list = match limit {
                Some(n) => {
                    client
                        .list_clients_page(org.as_ref(), state, Some(n), after.as_deref())
                        .await?
                }
                None => client.list_clients(org.as_ref(), state).await?,
            };
            if json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .clients
                .iter()
                .map(|c| {
                    vec![
                        c.fingerprint.to_string(),
                        c.org.to_string(),
                        c.state.to_string(),
                        c.role.as_str().to_owned(),
                        c.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                    ]
                })
                .collect();
            output::table(&["FINGERPRINT", "ORG", "STATE", "ROLE", "NAME"], &rows);
            if let Some(next) = &list.next_after {
                eprintln!("More clients follow: add --after {next}");
            }
            return Ok(());
        }
        ClientCommand::Approve { fingerprint: f } => (fingerprint(&f)?, "approve"),
        ClientCommand::Disable { fingerprint: f } => (fingerprint(&f)?, "disable"),
        ClientCommand::Enable { fingerprint: f } => (fingerprint(&f)?, "enable"),
        ClientCommand::Promote { fingerprint: f } => (fingerprint(&f)?, "promote"),
        ClientCommand::Demote { fingerprint: f } => (fingerprint(&f)?, "demote"),
        ClientCommand::ResetToken { fingerprint: f } => (fingerprint(&f)?, "reset-token"),
        ClientCommand::Delete {
            fingerprint: f,
            yes,
        } => {
            return super::lifecycle::delete_client(client, &fingerprint(&f)?, yes, json).await;
        }
        ClientCommand::DisableUnactivated {
            older_than,
            dry_run,
        } => {
            let list = if dry_run {
                client.preview_unactivated(older_than.as_secs()).await?
            } else {
                client.disable_unactivated(older_than.as_secs()).await?
            };
            if json {
                return output::json(&list);
            }
            println!(
                "{} {} client(s) that never used their registration.",
                if dry_run { "Would disable" } else { "Disabled" },
                list.clients.len()
            );
            for c in &list.clients {
                println!("  {} ({})", c.fingerprint, c.org);
            }
            return Ok(());
        }
    };
    let info = client.client_action(&fp, action).await?;
    if json {
        return output::json(&info);
    }
    println!(
        "Client {} is now {} ({}).",
        info.fingerprint,
        info.state,
        info.role.as_str()
    );
    if action == "reset-token" {
        println!("Its token is cleared: the next request from this identity is issued a new one.");
    }
    Ok(())
}
