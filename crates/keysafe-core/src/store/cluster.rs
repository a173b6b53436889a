//! The cluster's part of the storage interface: the nodes that share one database and their
//! heartbeats, the database's standbys, the cluster's TLS identity (wrapped by the keyring),
//! the feed of changes that other nodes cache, and the replay of audit entries a node spooled
//! while the database was read-only.
//!
//! Changes: a [`Mutation`] that alters something a node caches names it ([`Mutation::change`]).
//! The writer of every backend counts such changes in the database (the change serial, in the
//! change's own transaction) and, where the database can (PostgreSQL's NOTIFY), announces each
//! when it commits. Nodes follow the announcements and poll the serial, so a missed
//! announcement costs at most one polling interval (docs/adr/0011-change-propagation.md).

use super::{AuditAppendError, StoreResult};
use keysafe_proto::audit::AuditEvent;
use keysafe_proto::cluster::{NodeId, ReplicaInfo};
use keysafe_proto::{ClientFingerprint, Timestamp};

/// Something a node may hold in memory that another node changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// One client's state, role or token (disabled, approved, reset, locked as a clone).
    Client(ClientFingerprint),
    /// Any number of clients (a bulk change).
    Clients,
    /// The keyring: a version added, retired, or rows of a seal removed.
    Keyring,
    /// A node found the seal's key destroyed: every node checks its own seal now.
    Seal,
}

impl Change {
    /// The text announced for it (at most 100 bytes: well under NOTIFY's 8000).
    pub fn encode(&self) -> String {
        match self {
            Change::Client(fp) => format!("client:{fp}"),
            Change::Clients => "clients".into(),
            Change::Keyring => "keyring".into(),
            Change::Seal => "seal".into(),
        }
    }

    /// Reads an announced change; `None` for text this version does not know (a newer node's
    /// change kind: the follower then forgets everything, which is always safe).
    pub fn parse(s: &str) -> Option<Change> {
        match s {
            "clients" => Some(Change::Clients),
            "keyring" => Some(Change::Keyring),
            "seal" => Some(Change::Seal),
            _ => {
                let fp = s.strip_prefix("client:")?;
                ClientFingerprint::parse(fp).ok().map(Change::Client)
            }
        }
    }
}

/// One announced change and the change serial its transaction left in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeNotice {
    pub serial: u64,
    /// `None`: a change this version does not know.
    pub change: Option<Change>,
}

/// What a change feed delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeEvent {
    Notice(ChangeNotice),
    /// The feed lost its connection and is listening again: announcements made meanwhile were
    /// not seen, so whatever is cached may be stale.
    Resync,
}

/// A node as its last heartbeat described it (see `keysafe_proto::cluster::NodeInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: NodeId,
    pub address: String,
    pub version: String,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
    /// `unsealed` or `sealed`.
    pub seal: String,
    pub sealed_reason: Option<String>,
    /// The database server its writes go to (`HOST:PORT`); `None` when it found no primary.
    pub writes_to: Option<String>,
    pub fingerprint: ClientFingerprint,
}

/// The cluster's TLS identity: its certificate (public) and its private key, encrypted under a
/// data key that the keyring wraps, like a deposit's payload. Only a process that holds the
/// seal (and so the keyring) can read the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIdentityRecord {
    /// The certificate chain, PEM.
    pub cert_pem: String,
    /// The fingerprint of the certificate's key (part of the associated data).
    pub fingerprint: ClientFingerprint,
    /// The keyring version that wraps `wrapped_dek`.
    pub kek_version: u32,
    pub wrapped_dek: Vec<u8>,
    /// The private key (PKCS#8 PEM) sealed with AES-256-GCM under the data key.
    pub sealed_key: Vec<u8>,
    pub created_at: Timestamp,
}

/// Audit entries a node wrote to its spool while the database accepted no writes, appended
/// later as one unit under `id` (unique per node and batch, so a replay that was cut short is
/// never appended twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolBatch {
    /// `NODE/RANDOM`: at most 200 characters.
    pub id: String,
    pub events: Vec<AuditEvent>,
}

/// What replaying a spooled batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolReplay {
    Appended,
    /// The batch id was recorded already: an earlier replay appended it.
    AlreadyAppended,
}

/// Reads and upkeep of the cluster. Writes of node rows and the identity go through
/// [`super::Store::apply`] like every other change.
#[async_trait::async_trait]
pub trait ClusterStore: Send + Sync {
    /// Every node that sent a heartbeat and was not removed, by id.
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>>;
    /// The primary's standbys with their replication state, by name; empty when the backend
    /// has none (SQLite) or the database does not say (no `pg_monitor` role).
    async fn replication(&self) -> StoreResult<Vec<ReplicaInfo>>;
    /// Where this store's writes go now (`HOST:PORT` of the primary; the file for SQLite).
    /// `ReadOnly` when only a standby answers.
    async fn write_target(&self) -> StoreResult<String>;
    /// The cluster's TLS identity, if one is stored.
    async fn cluster_identity(&self) -> StoreResult<Option<ClusterIdentityRecord>>;
    /// How many cache-relevant changes were ever committed (see [`Mutation::change`]); it
    /// only grows.
    async fn change_serial(&self) -> StoreResult<u64>;
    /// The announcements of committed changes, when the backend has them (PostgreSQL's
    /// LISTEN/NOTIFY); `None` otherwise (then only [`ClusterStore::change_serial`] tells).
    /// Starts listening on first call; every call gets its own receiver.
    fn subscribe_changes(&self) -> Option<tokio::sync::broadcast::Receiver<ChangeEvent>>;
    /// Appends a spooled batch to the audit chain, in order, durably, as one unit together
    /// with a record of its id; a batch whose id is recorded already is not appended again
    /// (`AlreadyAppended`). On failure the events come back for a later retry.
    async fn append_spooled(&self, batch: SpoolBatch) -> Result<SpoolReplay, AuditAppendError>;
}

use super::Mutation;

impl Mutation {
    /// What other nodes may hold in memory that this change makes stale, if anything. Token
    /// rotations name nothing: a node whose cached token state disagrees with what a client
    /// presents reads the stored state before it judges (service `tokens`), and rotations are
    /// far too frequent to announce.
    pub fn change(&self) -> Option<Change> {
        match self {
            Mutation::MarkSuspectedClone { fingerprint, .. }
            | Mutation::ResetToken { fingerprint, .. }
            | Mutation::SetClientState { fingerprint, .. }
            | Mutation::SetClientRole { fingerprint, .. }
            | Mutation::DeleteClient { fingerprint, .. }
            | Mutation::RecoverAdmin { fingerprint, .. } => {
                Some(Change::Client(fingerprint.clone()))
            }
            Mutation::DisableUnactivated { .. } => Some(Change::Clients),
            Mutation::InsertKek(_) | Mutation::RetireKek { .. } | Mutation::KeepOnlySeal { .. } => {
                Some(Change::Keyring)
            }
            Mutation::Announce(c) => Some(c.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_encode_and_parse_back() {
        let fp = ClientFingerprint::parse(&"ab".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
        for c in [
            Change::Client(fp),
            Change::Clients,
            Change::Keyring,
            Change::Seal,
        ] {
            assert!(c.encode().len() <= 100);
            assert_eq!(Change::parse(&c.encode()), Some(c));
        }
        // A deleted or recovered client is forgotten by every node, as a disabled one is.
        let fp = ClientFingerprint::parse(&"cd".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
        let at = keysafe_proto::Timestamp::from_unix_millis(1);
        for m in [
            Mutation::DeleteClient {
                fingerprint: fp.clone(),
                at,
            },
            Mutation::RecoverAdmin {
                fingerprint: fp.clone(),
                at,
            },
        ] {
            assert_eq!(m.change(), Some(Change::Client(fp.clone())));
        }
        for unknown in ["", "client:", "client:xyz", "volume:1", "KEYRING"] {
            assert_eq!(Change::parse(unknown), None, "{unknown}");
        }
    }
}
