//! Wire types of a keysafe cluster: the name of a node, and what `GET /v1/admin/cluster`
//! answers (every node's last heartbeat, and the database's standbys with their replication
//! lag). No I/O.

use crate::{ClientFingerprint, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's stable identifier: 1 to 64 characters of `a-z`, `0-9`, `.`, `_` and `-`. `init`
/// draws a random one and keeps it in the data directory (`node-id`), so a node that restarts
/// is the same node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeId(String);

/// Why a node identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {0:?}: expected 1 to 64 characters of a-z, 0-9, '.', '_' and '-'")]
pub struct NodeIdError(String);

impl NodeId {
    pub fn parse(s: &str) -> Result<Self, NodeIdError> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NodeIdError(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One keysafe node as its heartbeats describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Where clients reach it (`https://HOST:PORT`).
    pub address: String,
    /// The keysafe version it runs.
    pub version: String,
    pub started_at: Timestamp,
    /// Its last heartbeat (written every `cluster.heartbeat_interval`).
    pub heartbeat_at: Timestamp,
    /// `unsealed`, or `sealed` (then `sealed_reason` says why).
    pub seal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_reason: Option<String>,
    /// The database server its writes went to at its last heartbeat (`HOST:PORT`), or `None`
    /// when it found no primary (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_to: Option<String>,
    /// The fingerprint of the TLS key it serves (one per cluster when nodes joined with
    /// `init --join`).
    pub fingerprint: ClientFingerprint,
    /// Seconds since its last heartbeat, as the answering node's clock saw it.
    pub heartbeat_age_seconds: f64,
    /// Whether the heartbeat is older than three heartbeat intervals (the node is likely down).
    pub stale: bool,
}

/// One standby of the database, as the primary reports it (`pg_stat_replication`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicaInfo {
    /// The standby's `application_name` (pg_auto_failover: `pgautofailover_standby_N`).
    pub name: String,
    /// Its address, when it connects over TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `streaming`, `catchup`, `backup`, ...
    pub state: String,
    /// `sync`, `quorum`, `potential` or `async`.
    pub sync_state: String,
    /// Bytes of write-ahead log the primary has written that the standby has not replayed yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// How long ago the standby last replayed what the primary had flushed (PostgreSQL's
    /// `replay_lag`), in seconds; `None` when idle or not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lag_seconds: Option<f64>,
}

/// `GET /v1/admin/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    /// The node that answered.
    pub answered_by: NodeId,
    /// Every node that ever sent a heartbeat and was not removed, by id.
    pub nodes: Vec<NodeInfo>,
    /// The database primary's standbys (empty on SQLite, or when the database does not tell:
    /// the keysafe role needs `pg_monitor` to see them).
    pub replicas: Vec<ReplicaInfo>,
    /// How long a change made through one node takes at most to reach the others when its
    /// notification is lost (the polling interval), in seconds.
    pub change_poll_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_checked() {
        for ok in ["a", "node-1", "ks1.example.com", &"x".repeat(64)] {
            assert_eq!(NodeId::parse(ok).map(|n| n.to_string()), Ok(ok.to_owned()));
        }
        for bad in ["", "Node", "a b", "a/b", &"x".repeat(65), "ü"] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<NodeId>("\"BAD\"").is_err());
        assert_eq!(
            serde_json::from_str::<NodeId>("\"n1\"")
                .ok()
                .map(|n| n.as_str().to_owned()),
            Some("n1".to_owned())
        );
    }
}
