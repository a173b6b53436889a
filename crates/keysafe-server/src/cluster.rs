//! This process as a node of a cluster over one database (docs/cluster.md): its stable id (the
//! data directory's `node-id`), the heartbeat that `keysafe admin cluster status` reads, the
//! task that follows changes other nodes made to what this node caches (announcements, with
//! the change serial polled as the fallback), the announcement that this node found its seal
//! key destroyed, and the `Retry-After` of a read-only answer. Nothing here talks to another
//! node: everything goes through the database.

use crate::state::AppState;
use anyhow::{Context, bail};
use keysafe_core::store::{Change, ChangeEvent, NodeId, NodeRecord, StoreError};
use keysafe_proto::ErrorCode;
use keysafe_proto::cluster::{ClusterStatus, NodeInfo};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The node's id in its data directory.
pub const NODE_ID_FILE: &str = "node-id";
/// What a `503 read_only` answer asks clients to wait before retrying a write, in seconds.
pub const READ_ONLY_RETRY_AFTER: u64 = 5;

/// The `Retry-After` an answer with `code` carries, if any.
pub fn retry_after(code: ErrorCode) -> Option<u64> {
    match code {
        ErrorCode::ReadOnly => Some(READ_ONLY_RETRY_AFTER),
        _ => None,
    }
}

/// The `[cluster]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCluster {
    #[serde(with = "humantime_serde")]
    heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    change_poll_interval: Duration,
    advertise_url: String,
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            change_poll_interval: Duration::from_secs(1),
            advertise_url: String::new(),
        }
    }
}

/// The validated `[cluster]` section.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How often this node records its heartbeat.
    pub heartbeat_interval: Duration,
    /// How often the change serial is polled: the longest a change made through another node
    /// takes to reach this one when its announcement was lost.
    pub change_poll_interval: Duration,
    /// Where clients reach this node, as shown by `cluster status`; empty: derived from
    /// `server.hostname` (or the listen address) and the port.
    pub advertise_url: Option<String>,
}

impl ClusterConfig {
    pub(crate) fn from_raw(raw: RawCluster) -> anyhow::Result<Self> {
        if raw.heartbeat_interval < Duration::from_millis(100) {
            bail!("cluster.heartbeat_interval must be at least 100ms");
        }
        if raw.change_poll_interval < Duration::from_millis(50) {
            bail!("cluster.change_poll_interval must be at least 50ms");
        }
        let advertise_url = match raw.advertise_url.as_str() {
            "" => None,
            u if u.starts_with("https://") => Some(u.trim_end_matches('/').to_owned()),
            u => bail!("cluster.advertise_url {u:?} must start with https://"),
        };
        Ok(Self {
            heartbeat_interval: raw.heartbeat_interval,
            change_poll_interval: raw.change_poll_interval,
            advertise_url,
        })
    }
}

/// The documented `[cluster]` section of the configuration template.
pub(crate) const CONFIG_SECTION: &str = r#"[cluster]
# Several keysafe nodes may share one PostgreSQL database (docs/cluster.md). Each node records a
# heartbeat this often (`keysafe admin cluster status` shows it; three missed ones mark the node
# stale).
heartbeat_interval = "5s"
# Changes made through one node to what every node caches (a client disabled, approved or reset,
# a keyring rotation or retirement, a destroyed HSM key) are announced to the others at once
# (PostgreSQL LISTEN/NOTIFY); a node also polls the database's change counter this often, so a
# lost announcement takes effect within this time.
change_poll_interval = "1s"
# Where clients reach this node, shown by `cluster status` (empty: https://HOSTNAME:PORT).
advertise_url = ""

"#;

/// Reads the node's id from the data directory, creating it (random) when it is missing.
pub fn node_id(data_dir: &Path) -> anyhow::Result<NodeId> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeId::parse(text.trim())
            .with_context(|| format!("{} holds no valid node id", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_node_id(data_dir),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Creates the data directory's node id: `node-` and 12 random hex digits.
pub fn create_node_id(data_dir: &Path) -> anyhow::Result<NodeId> {
    let mut b = [0u8; 6];
    keysafe_core::crypto::random_bytes(&mut b)
        .map_err(|_| anyhow::anyhow!("no randomness for a node id"))?;
    let id = NodeId::parse(&format!("node-{}", hex::encode(b)))?;
    let path = data_dir.join(NODE_ID_FILE);
    keysafe_core::fs::write_new(&path, format!("{id}\n").as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// This node: its id, where clients reach it, and its cluster settings.
#[derive(Debug)]
pub struct ClusterNode {
    pub id: NodeId,
    pub address: String,
    pub started_at: keysafe_proto::Timestamp,
    pub config: ClusterConfig,
}

impl ClusterNode {
    pub fn open(config: &crate::config::Config) -> anyhow::Result<Arc<Self>> {
        let id = node_id(&config.data_dir)?;
        let address = config.cluster.advertise_url.clone().unwrap_or_else(|| {
            if config.listen.ip().is_unspecified() {
                format!("https://{}:{}", config.hostname, config.listen.port())
            } else {
                config.local_url()
            }
        });
        Ok(Arc::new(Self {
            id,
            address,
            started_at: keysafe_proto::Timestamp::now(),
            config: config.cluster.clone(),
        }))
    }

    /// Starts the heartbeat, the change follower and the seal announcer; they run until
    /// aborted.
    pub fn spawn(self: &Arc<Self>, state: AppState) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(heartbeat(self.clone(), state.clone())),
            tokio::spawn(follow_changes(self.clone(), state.clone())),
            tokio::spawn(announce_seal(state)),
        ]
    }

    /// What `GET /v1/admin/cluster` answers, from the stored heartbeats.
    pub fn status(
        &self,
        nodes: Vec<NodeRecord>,
        replicas: Vec<keysafe_proto::cluster::ReplicaInfo>,
    ) -> ClusterStatus {
        let now = keysafe_proto::Timestamp::now().unix_millis();
        let stale_after = self.config.heartbeat_interval.as_millis() as f64 * 3.0;
        ClusterStatus {
            answered_by: self.id.clone(),
            nodes: nodes
                .into_iter()
                .map(|n| {
                    let age_ms = (now - n.heartbeat_at.unix_millis()).max(0) as f64;
                    NodeInfo {
                        id: n.id,
                        address: n.address,
                        version: n.version,
                        started_at: n.started_at,
                        heartbeat_at: n.heartbeat_at,
                        seal: n.seal,
                        sealed_reason: n.sealed_reason,
                        writes_to: n.writes_to,
                        fingerprint: n.fingerprint,
                        heartbeat_age_seconds: age_ms / 1000.0,
                        stale: age_ms > stale_after,
                    }
                })
                .collect(),
            replicas,
            change_poll_seconds: self.config.change_poll_interval.as_secs_f64(),
        }
    }
}

/// Records this node's heartbeat every interval, with where its writes go, and exports the
/// database's replication state as metrics.
async fn heartbeat(node: Arc<ClusterNode>, state: AppState) {
    let store = state.service.store().clone();
    let mut tick = tokio::time::interval(node.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut standbys = BTreeSet::new();
    loop {
        tick.tick().await;
        let writes_to = match store.write_target().await {
            Ok(t) => {
                metrics::gauge!("keysafe_storage_read_only").set(0.0);
                Some(t)
            }
            Err(StoreError::ReadOnly) => {
                metrics::gauge!("keysafe_storage_read_only").set(1.0);
                None
            }
            Err(_) => None,
        };
        let seal = state.service.seal_report();
        let record = NodeRecord {
            id: node.id.clone(),
            address: node.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: node.started_at,
            heartbeat_at: keysafe_proto::Timestamp::now(),
            seal: seal.state.to_owned(),
            sealed_reason: seal.reason,
            writes_to,
            fingerprint: state.fingerprint(),
        };
        match state.service.heartbeat(record).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot record this node's heartbeat");
            }
            Err(_) => {}
        }
        if let Ok(replicas) = store.replication().await {
            export_replication(&replicas, &mut standbys);
        }
    }
}

/// Sets the replication gauges from what the primary reports: how many standbys are connected,
/// and each one's lag. A standby that is no longer reported keeps its series with the value
/// NaN ("no current value"), so an alert on its lag stops instead of firing on the last figure
/// for ever; its absence shows in `keysafe_database_replicas`.
fn export_replication(
    replicas: &[keysafe_proto::cluster::ReplicaInfo],
    standbys: &mut BTreeSet<String>,
) {
    metrics::gauge!("keysafe_database_replicas").set(replicas.len() as f64);
    let now: BTreeSet<String> = replicas.iter().map(|r| r.name.clone()).collect();
    for gone in standbys.difference(&now) {
        for series in [
            "keysafe_database_replica_lag_bytes",
            "keysafe_database_replica_replay_lag_seconds",
        ] {
            metrics::gauge!(series, "standby" => gone.clone()).set(f64::NAN);
        }
    }
    for r in replicas {
        let lag_bytes = r.lag_bytes.map_or(f64::NAN, |b| b as f64);
        metrics::gauge!("keysafe_database_replica_lag_bytes", "standby" => r.name.clone())
            .set(lag_bytes);
        // PostgreSQL stops measuring replay lag once a standby has replayed everything and the
        // primary is idle: that is no lag. Unknown otherwise (the byte lag still shows it).
        let replay = match (r.replay_lag_seconds, r.lag_bytes) {
            (Some(s), _) => s,
            (None, Some(0)) => 0.0,
            (None, _) => f64::NAN,
        };
        metrics::gauge!("keysafe_database_replica_replay_lag_seconds", "standby" => r.name.clone())
            .set(replay);
    }
    *standbys = now;
}

/// The next event of a change feed, or never when there is none.
async fn next_event(
    rx: &mut Option<tokio::sync::broadcast::Receiver<ChangeEvent>>,
) -> Result<ChangeEvent, tokio::sync::broadcast::error::RecvError> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Applies what other nodes changed: each announcement as it comes; everything after a
/// reconnect of the feed or a lagging receiver; and everything when the change serial moved
/// past what the announcements said (one was missed).
async fn follow_changes(node: Arc<ClusterNode>, state: AppState) {
    use tokio::sync::broadcast::error::RecvError;
    let store = state.service.store().clone();
    let service = state.service.clone();
    let mut rx = store.subscribe_changes();
    let mut seen = store.change_serial().await.unwrap_or(0);
    let mut poll = tokio::time::interval(node.config.change_poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = next_event(&mut rx) => match ev {
                Ok(ChangeEvent::Notice(n)) => {
                    seen = seen.max(n.serial);
                    metrics::counter!("keysafe_cluster_changes_total", "source" => "announcement").increment(1);
                    service.apply_change(n.change.as_ref()).await;
                }
                Ok(ChangeEvent::Resync) | Err(RecvError::Lagged(_)) => {
                    // Read first: whatever commits after this read is announced or polled.
                    let now = store.change_serial().await.ok();
                    metrics::counter!("keysafe_cluster_changes_total", "source" => "resync").increment(1);
                    service.resync().await;
                    if let Some(s) = now {
                        seen = seen.max(s);
                    }
                }
                Err(RecvError::Closed) => rx = None,
            },
            _ = poll.tick() => {
                match store.change_serial().await {
                    Ok(db) if db > seen => {
                        tracing::debug!(seen, db, "changes without an announcement: forgetting what is cached");
                        metrics::counter!("keysafe_cluster_changes_total", "source" => "poll").increment(1);
                        service.resync().await;
                        seen = db;
                    }
                    // A database restored from an older backup: start counting from it.
                    Ok(db) if db < seen => seen = db,
                    _ => {}
                }
            }
        }
    }
}

/// When this node finds its seal's key destroyed, tells the other nodes to check theirs now.
async fn announce_seal(state: AppState) {
    state.service.seal_key_destroyed().await;
    for attempt in 0..60u32 {
        match state.service.announce(Change::Seal).await {
            Ok(()) => {
                tracing::warn!("told the other nodes that the seal key is destroyed");
                return;
            }
            Err(e) => {
                if attempt == 0 {
                    tracing::warn!(error = %e, "cannot announce the destroyed seal key yet; retrying");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = node_id(dir.path()).unwrap();
        assert!(a.as_str().starts_with("node-") && a.as_str().len() == 17);
        assert_eq!(node_id(dir.path()).unwrap(), a);
        std::fs::write(dir.path().join(NODE_ID_FILE), "Not Valid\n").unwrap();
        assert!(node_id(dir.path()).is_err());
    }

    #[test]
    fn only_read_only_answers_ask_to_retry_later() {
        assert_eq!(
            retry_after(ErrorCode::ReadOnly),
            Some(READ_ONLY_RETRY_AFTER)
        );
        assert_eq!(retry_after(ErrorCode::Unavailable), None);
        assert_eq!(retry_after(ErrorCode::NotFound), None);
    }
}
