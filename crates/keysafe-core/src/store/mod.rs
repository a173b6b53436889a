//! The storage interface. A store keeps records; it does no cryptography and makes no policy
//! decisions beyond the atomic checks a write needs (uniqueness, compare-and-set). It is split by
//! role: [`IdentityStore`], [`DepositStore`], [`GroupStore`], [`KeyringStore`], [`AuditStore`],
//! [`AdminStore`], [`LifecycleStore`] and [`ClusterStore`] for reads and upkeep, and [`Store`], which combines them and adds the one
//! write path, [`Store::apply`]: every change is a [`Mutation`], so a backend can commit many in
//! one durable transaction (group commit) together with their audit entries.
//!
//! Each method's doc comment is its contract; every backend implements exactly that, and the
//! conformance suite in `keysafe-store` pins it. Nothing here names a backend, a table or a
//! connection. Orderings are by bytes (never by a database's collation).

mod cluster;
pub mod export;
mod integrity;
mod lifecycle;
mod memo;
mod mutation;
mod records;

pub use cluster::{
    Change, ChangeEvent, ChangeNotice, ClusterIdentityRecord, ClusterStore, NodeRecord, SpoolBatch,
    SpoolReplay,
};
pub use export::{ExportRecord, ImportSummary, RecordStream};
pub use integrity::{
    AccessRow, AccessRowKind, AccessRowRef, RowAuthMode, RowAuthSlot, RowAuthenticator,
    check_before_write, mac_of,
};
pub use keysafe_proto::api::WrappedKind;
pub use keysafe_proto::cluster::{NodeId, ReplicaInfo};
pub use lifecycle::{
    ClientCursor, ClientDependents, ClientListing, Counted, GroupDependents, GroupRef,
    LifecycleStore, OrgDependents, refusal,
};
pub use memo::{ReadMemo, version_row};
pub use mutation::{Applied, Mutation, RowAuth};
pub use records::*;

use async_trait::async_trait;
use keysafe_proto::api::ClientState;
use keysafe_proto::audit::{AuditCheckpoint, AuditEntry, AuditEvent};
use keysafe_proto::{ClientFingerprint, DepositVersion, GroupName, OrgName, Principal, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// A compare-and-set on a deposit's current version failed; carries what is current.
    #[error("version conflict")]
    VersionConflict { current: Option<DepositVersion> },
    /// A compare-and-set on something other than a deposit version failed (token counter, group
    /// epoch, ACL serial).
    #[error("conflict")]
    Conflict,
    /// The deposit is soft-deleted and cannot take a new version.
    #[error("deposit is deleted")]
    Deleted,
    /// The database cannot be reached.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The database answers but refuses writes: only a read-only standby is reachable (or the
    /// primary is being demoted). Reads may still work; writes can be retried later.
    #[error("storage is read-only")]
    ReadOnly,
    /// The change would alter an authenticated access row, which cannot be authenticated
    /// while the service is sealed.
    #[error("sealed: authenticated rows cannot be changed until the server is unsealed")]
    Sealed,
    /// A stored row does not decode (bad enum text, negative size): treated as tampering.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("storage error: {0}")]
    Backend(String),
    /// The object is still referenced (a keyring version that data keys still use; a client,
    /// group or organisation something still depends on). The message says what.
    #[error("still in use: {0}")]
    InUse(String),
    /// The database's schema has a migration newer than this binary knows: another node was
    /// upgraded and migrated it. This node must not serve on it (it refuses to open it, and
    /// refuses writes once it finds the schema moved on while it runs) until it is upgraded.
    #[error(
        "the database schema is at migration {database}, newer than this keysafe knows (up to \
         migration {known}): upgrade keysafe on this node (docs/operations.md, Upgrades)"
    )]
    SchemaTooNew { database: i64, known: i64 },
    /// This store cannot do that (a backend not built into this binary, or an operation only
    /// some backends have). The message says what instead.
    #[error("{0}")]
    Unsupported(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An audit append that did not happen, with its entries handed back (unchanged, not copied),
/// so that the caller can retry them: an acknowledged request's entry is never dropped.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct AuditAppendError {
    pub error: StoreError,
    pub events: Vec<AuditEvent>,
}

/// Organisations and clients.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    async fn get_org(&self, name: &OrgName) -> StoreResult<Option<OrgRecord>>;
    /// Every organisation, by name.
    async fn list_orgs(&self) -> StoreResult<Vec<OrgRecord>>;
    async fn get_client(&self, fp: &ClientFingerprint) -> StoreResult<Option<ClientRecord>>;
    /// Clients of `org` (all when `None`) in `state` (any when `None`), ordered by
    /// organisation, registration time, then fingerprint.
    async fn list_clients(
        &self,
        org: Option<&OrgName>,
        state: Option<ClientState>,
    ) -> StoreResult<Vec<ClientRecord>>;
}

/// A deposit's header and one of its versions, as [`DepositStore::get_version`] reads them, and
/// what reads derived from them ([`ReadMemo`]); shared, so that a backend that keeps rows in
/// memory hands them out without copying. Made by [`version_row`].
pub type VersionRow = std::sync::Arc<(DepositRecord, VersionRecord, ReadMemo)>;

/// Deposits, their versions and their grants.
#[async_trait]
pub trait DepositStore: Send + Sync {
    /// The deposit's header, soft-deleted or not.
    async fn get_deposit(&self, key: &DepositKey) -> StoreResult<Option<DepositRecord>>;
    /// The deposit header and one version (`None`: the current one), in one read. `None` when
    /// the deposit or that version does not exist; soft-deleted deposits are returned too.
    async fn get_version(
        &self,
        key: &DepositKey,
        version: Option<DepositVersion>,
    ) -> StoreResult<Option<VersionRow>>;
    /// One page of an owner's deposits: see [`DepositListing`]. Ordered by name, in bytes.
    async fn list_deposits(&self, q: DepositListing<'_>) -> StoreResult<Vec<DepositRecord>>;
    /// Every version's metadata, ascending; empty when the deposit does not exist.
    async fn list_versions(&self, key: &DepositKey) -> StoreResult<Vec<VersionMeta>>;
    /// The deposit's grants, by grant time then grantee; empty when it has none or does not
    /// exist.
    async fn get_grants(&self, key: &DepositKey) -> StoreResult<Vec<GrantRecord>>;
    /// Deposits (not soft-deleted) with a grant to any of `grantees`, with that grant: one
    /// entry per matching grant, ordered by owner, name, then grantee (bytes).
    async fn list_shared(
        &self,
        grantees: &[Principal],
    ) -> StoreResult<Vec<(DepositRecord, GrantRecord)>>;
    /// Lets go of every row kept in memory for reads, and so of what reads derived from them
    /// (unwrapped data keys among it): the service calls it when it seals. Nothing to do for a
    /// backend that keeps none. No default: a store that wraps another must pass it on.
    fn forget_cached_rows(&self);
}

/// Groups, their epochs and the identities wrapped for their members.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// The group with its epochs (ascending) and its members (by time added, then
    /// fingerprint), each with the epochs wrapped for it (ascending).
    async fn get_group(&self, org: &OrgName, name: &GroupName) -> StoreResult<Option<GroupRecord>>;
    /// Groups of an organisation (all when `None`), or only those `member` belongs to,
    /// ordered by organisation then name; each as [`GroupStore::get_group`] returns it.
    async fn list_groups(
        &self,
        org: Option<&OrgName>,
        member: Option<&ClientFingerprint>,
    ) -> StoreResult<Vec<GroupRecord>>;
    /// The identities of every epoch wrapped for `member`, by epoch; empty when there are none.
    async fn group_keys(
        &self,
        org: &OrgName,
        name: &GroupName,
        member: &ClientFingerprint,
    ) -> StoreResult<Vec<WrappedKeyRecord>>;
    /// The groups of `org` that `member` belongs to, ordered by name, each with its membership
    /// row's MAC (the access check's fast path: one indexed read).
    async fn member_groups(
        &self,
        org: &OrgName,
        member: &ClientFingerprint,
    ) -> StoreResult<Vec<MemberGroup>>;
}

/// The keyring rows and the secrets they wrap, for opening, rotation and re-wrap.
#[async_trait]
pub trait KeyringStore: Send + Sync {
    /// Every keyring row, by version then seal descriptor.
    async fn load_keks(&self) -> StoreResult<Vec<KekRecord>>;
    /// Rows of `kind` not wrapped by `current`, ordered by id, strictly after `after`
    /// (pagination), at most `limit`. Ids order as: deposit versions by owner, name, then
    /// version (bytes, numbers); audit signing keys by key id; the cluster TLS key by its
    /// fingerprint (there is at most one).
    async fn list_stale_wrapped(
        &self,
        kind: WrappedKind,
        current: u32,
        after: Option<&WrappedId>,
        limit: u32,
    ) -> StoreResult<Vec<WrappedRow>>;
    /// How many wrapped rows use each keyring version, per kind: one entry per (kind, version)
    /// in use, ordered as [`WrappedKind::ALL`], then by version.
    async fn kek_usage(&self) -> StoreResult<Vec<KekUsage>>;
}

/// The audit chain: one hash chain of entries, each appended with the next sequence number and
/// the previous entry's hash, and signed checkpoints of its head.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends entries (reads, refusals) to the chain, durably, in the order given, as one
    /// unit: all of them or none. On failure the entries come back for a retry.
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<(), AuditAppendError>;
    /// Entries with `seq >= from` and `time >= since`, ascending, at most `limit`.
    async fn audit_entries(
        &self,
        from: u64,
        since: Option<Timestamp>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// Checkpoints with `seq >= from`, ascending.
    async fn audit_checkpoints(&self, from: u64) -> StoreResult<Vec<AuditCheckpoint>>;
    /// The head of the chain as this store handle last saw it while holding the right to
    /// append: the entry it appended last, or a later one another writer (process or node)
    /// had committed when this handle last appended. Every entry up to it is committed and
    /// chains to it, so a checkpoint may sign it. Other writers may have appended since, so
    /// the chain's head in the database is this one or later; this one never goes backwards.
    /// Answered from memory (no database round trip). `(0, GENESIS)` for an empty chain.
    fn audit_head(&self) -> AuditHead;
    /// The newest audit signing key, if one is stored.
    async fn audit_signing_key(&self) -> StoreResult<Option<AuditKeyRecord>>;
}

/// Health, counts and lifecycle.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// `Ok` when the database answers a trivial read.
    async fn ping(&self) -> StoreResult<()>;
    /// Counts for metrics.
    async fn stats(&self) -> StoreResult<StoreStats>;
    /// Lets go of the database connections for reads; writes already acknowledged are
    /// durable. The store must not be used afterwards.
    async fn close(&self);
    /// Every record the store holds (see [`export`]), as one consistent snapshot: a write
    /// committed after this returned is not in it, and none committed before is missing. Kinds
    /// come in [`export::RECORD_KINDS`] order, each kind's records ordered by its key fields,
    /// sealed and wrapped bytes exactly as stored. The records are read from the database as
    /// the stream is consumed (memory stays flat whatever the store's size); the store keeps
    /// serving reads and writes meanwhile. An error ends the stream with an `Err` item; a
    /// stream that ends without one is complete.
    async fn export(&self) -> StoreResult<RecordStream>;
    /// Writes `records` (an export, from any backend) into this store, which must hold no
    /// record of any kind (`AlreadyExists` otherwise), in batches, all in one transaction: the
    /// records are committed only when the stream has ended without an error; on any error
    /// (an `Err` item, a record the database refuses) nothing is written and the error is
    /// returned. Every value is kept as it is (audit `seq`, `hash`, `prev_hash` included), and
    /// the audit chain's head becomes the last imported entry, so appends continue the chain.
    async fn import(&self, records: RecordStream) -> StoreResult<ImportSummary>;
    /// The slot the service installs its row authenticator in (see [`RowAuthSlot`]): every
    /// write of this store from then on keeps the MACs of the rows it touches current, and
    /// verifies their old MACs first.
    fn row_auth(&self) -> &RowAuthSlot;
}

/// A whole store: every role, and the write path.
#[async_trait]
pub trait Store:
    IdentityStore
    + DepositStore
    + GroupStore
    + KeyringStore
    + AuditStore
    + AdminStore
    + LifecycleStore
    + ClusterStore
    + 'static
{
    /// Applies one change durably: when this returns `Ok`, the change survives a crash. Each
    /// mutation's contract is on its [`Mutation`] variant.
    async fn apply(&self, mutation: Mutation) -> StoreResult<Applied> {
        self.apply_audited(mutation, None).await
    }

    /// Applies one change and appends its audit entry to the chain in the same transaction:
    /// both commit or neither does (a failing append fails the change with `Unavailable`).
    async fn apply_audited(
        &self,
        mutation: Mutation,
        audit: Option<AuditEvent>,
    ) -> StoreResult<Applied>;

    /// Queues a change as [`Store::apply_audited`] would apply it, and returns once it is
    /// queued: the returned [`Queued`] resolves to its result when it is durable (or failed).
    /// Changes queued through one store handle apply in the order they were queued, so a
    /// change that depends on an earlier one still in the queue (the next version of the
    /// same deposit) may be queued before that one commits; both may share one commit.
    /// Nothing is acknowledged before its commit. A backend without a queue applies the
    /// change before returning (the default).
    async fn submit_audited(
        &self,
        mutation: Mutation,
        audit: Option<AuditEvent>,
    ) -> StoreResult<Queued> {
        Ok(Queued::ready(self.apply_audited(mutation, audit).await))
    }
}

/// A change queued by [`Store::submit_audited`]: awaits its durable result.
pub struct Queued(std::pin::Pin<Box<dyn Future<Output = StoreResult<Applied>> + Send>>);

impl Queued {
    /// A change already applied (or refused).
    pub fn ready(result: StoreResult<Applied>) -> Self {
        Self(Box::pin(std::future::ready(result)))
    }

    /// A change whose result arrives from a writer on `reply`; a writer that stops without
    /// answering is `stopped`.
    pub fn reply(
        reply: tokio::sync::oneshot::Receiver<StoreResult<Applied>>,
        stopped: fn() -> StoreError,
    ) -> Self {
        Self(Box::pin(async move { reply.await.map_err(|_| stopped())? }))
    }
}

impl Future for Queued {
    type Output = StoreResult<Applied>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queued")
    }
}
