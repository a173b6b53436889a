//! `keysafe admin cluster status|remove`: the nodes of a cluster as their heartbeats describe
//! them, the database's standbys, and forgetting a node that is gone.

use crate::cli::ClusterCommand;
use crate::exit::usage;
use crate::output;
use keysafe_client::KeysafeClient;
use keysafe_proto::cluster::{ClusterStatus, NodeId};

pub async fn run(client: &KeysafeClient, cmd: ClusterCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status => {
            let st = client.cluster_status().await?;
            if json {
                return output::json(&st);
            }
            print_status(&st);
            Ok(())
        }
        ClusterCommand::Remove { node } => {
            let id = NodeId::parse(&node).map_err(|e| usage(e.to_string()))?;
            client.cluster_remove_node(&id).await?;
            if json {
                return output::json(&serde_json::json!({ "removed": id }));
            }
            println!("Node {id} removed from the cluster status.");
            Ok(())
        }
    }
}

fn print_status(st: &ClusterStatus) {
    let rows: Vec<Vec<String>> = st
        .nodes
        .iter()
        .map(|n| {
            vec![
                format!("{}{}", n.id, if n.id == st.answered_by { " *" } else { "" }),
                n.address.clone(),
                n.version.clone(),
                format!(
                    "{} ({:.0}s ago){}",
                    n.heartbeat_at.to_rfc3339(),
                    n.heartbeat_age_seconds,
                    if n.stale { " STALE" } else { "" }
                ),
                match &n.sealed_reason {
                    Some(r) => format!("{}: {r}", n.seal),
                    None => n.seal.clone(),
                },
                n.writes_to
                    .clone()
                    .unwrap_or_else(|| "- (read-only)".to_owned()),
            ]
        })
        .collect();
    output::table(
        &[
            "NODE",
            "ADDRESS",
            "VERSION",
            "LAST HEARTBEAT",
            "SEAL",
            "WRITES TO",
        ],
        &rows,
    );
    println!();
    if st.replicas.is_empty() {
        println!(
            "Standbys: none reported (SQLite, no standby, or the database role lacks pg_monitor)."
        );
    } else {
        let rows: Vec<Vec<String>> = st
            .replicas
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.address.clone().unwrap_or_default(),
                    r.state.clone(),
                    r.sync_state.clone(),
                    r.lag_bytes.map(|b| b.to_string()).unwrap_or_default(),
                    r.replay_lag_seconds
                        .map(|s| format!("{s:.3}"))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        output::table(
            &[
                "STANDBY",
                "ADDRESS",
                "STATE",
                "SYNC",
                "LAG BYTES",
                "REPLAY LAG (S)",
            ],
            &rows,
        );
    }
    println!(
        "(* answered this request; changes reach every node at once, or within {:.1}s when an announcement is lost)",
        st.change_poll_seconds
    );
}
