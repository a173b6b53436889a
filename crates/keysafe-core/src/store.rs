//! The storage interface. A store keeps records; it does no cryptography and makes no policy
//! decisions beyond the atomic checks a write needs (uniqueness, compare-and-set on a deposit's
//! current version). Every change goes through [`Store::apply`], so a backend can commit many
//! changes in one durable transaction (group commit) and, later, append audit records to the same
//! transaction.

use async_trait::async_trait;
use keysafe_proto::api::{AuthMode, ClientRole, ClientState};
use keysafe_proto::{
    ClientFingerprint, ClientName, DepositName, DepositVersion, OrgName, Timestamp,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// A compare-and-set on a deposit's current version failed; carries what is current.
    #[error("version conflict")]
    VersionConflict { current: Option<DepositVersion> },
    /// The deposit is soft-deleted and cannot take a new version.
    #[error("deposit is deleted")]
    Deleted,
    /// The database cannot be reached or refuses writes (for example, a read-only standby).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored row does not decode (bad enum text, negative size): treated as tampering.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("storage error: {0}")]
    Backend(String),
    /// The object is still referenced (a keyring version that data keys still use).
    #[error("still in use: {0}")]
    InUse(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    pub name: OrgName,
    pub contacts: Vec<String>,
    pub auth_mode: AuthMode,
    /// Argon2id PHC string of the auth secret; `None` in approval mode.
    pub auth_hash: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub fingerprint: ClientFingerprint,
    pub org: OrgName,
    pub name: Option<ClientName>,
    pub state: ClientState,
    pub role: ClientRole,
    /// The certificate presented at registration (public data), kept for audits and re-checks.
    pub cert_der: Vec<u8>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One keyring version, wrapped by the seal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekRecord {
    pub version: u32,
    /// The descriptor of the seal that wrapped it (see `seal`).
    pub seal: String,
    pub wrapped: Vec<u8>,
    pub created_at: Timestamp,
}

/// Identifies a deposit: names are unique per owning client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepositKey {
    pub owner: ClientFingerprint,
    pub name: DepositName,
}

/// A deposit's header row: which version is current and whether it is soft-deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositRecord {
    pub org: OrgName,
    pub owner: ClientFingerprint,
    pub name: DepositName,
    pub current_version: DepositVersion,
    pub current_size: u64,
    pub deleted: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Metadata of one stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    pub version: DepositVersion,
    pub size: u64,
    pub created_at: Timestamp,
    pub creator: ClientFingerprint,
}

/// One stored version: metadata plus the sealed payload and its wrapped data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub meta: VersionMeta,
    pub kek_version: u32,
    pub wrapped_dek: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

// --- Keyring rotation, re-wrap and seal migration (issue 5) ---------------------------------

/// A kind of row that holds a secret wrapped by the keyring. The re-wrap job walks each kind;
/// adding a table of KEK-wrapped rows means adding a variant here, its [`WrappedId`] variant, its
/// associated data (`service::rewrap::aad_for`) and its three SQL statements in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WrappedKind {
    /// `deposit_versions.wrapped_dek`.
    DepositVersion,
}

impl WrappedKind {
    pub const ALL: &'static [WrappedKind] = &[WrappedKind::DepositVersion];

    pub fn as_str(self) -> &'static str {
        match self {
            WrappedKind::DepositVersion => "deposit_versions",
        }
    }
}

/// Identifies one KEK-wrapped row (and carries what its associated data needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrappedId {
    DepositVersion {
        org: OrgName,
        key: DepositKey,
        version: DepositVersion,
    },
}

/// One KEK-wrapped row as the re-wrap job sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedRow {
    pub id: WrappedId,
    pub kek_version: u32,
    pub wrapped: Vec<u8>,
}

/// How many rows of a kind use a keyring version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekUsage {
    pub kind: WrappedKind,
    pub kek_version: u32,
    pub count: u64,
}

// --- end of issue 5 block ---------------------------------------------------------------------

/// Every change a store can make. Each is atomic on its own; a backend may commit several in one
/// transaction, but each succeeds or fails by itself.
#[derive(Debug, Clone)]
pub enum Mutation {
    InsertKek(KekRecord),
    /// Fails with `AlreadyExists` if the name is taken.
    CreateOrg(OrgRecord),
    /// Fails with `NotFound` if the organisation does not exist.
    SetOrgAuth {
        name: OrgName,
        mode: AuthMode,
        auth_hash: Option<String>,
        at: Timestamp,
    },
    /// Fails with `AlreadyExists` if the fingerprint is registered.
    InsertClient(ClientRecord),
    /// Fails with `NotFound` if no such client.
    SetClientState {
        fingerprint: ClientFingerprint,
        state: ClientState,
        at: Timestamp,
    },
    /// Fails with `NotFound` if no such client.
    SetClientRole {
        fingerprint: ClientFingerprint,
        role: ClientRole,
        at: Timestamp,
    },
    /// Adds a version. `expected_current` is the current version the writer saw (`None`: the
    /// deposit did not exist); anything else is `VersionConflict`. A deleted deposit is `Deleted`.
    PutVersion {
        org: OrgName,
        key: DepositKey,
        expected_current: Option<DepositVersion>,
        version: VersionRecord,
    },
    /// Soft-deletes or restores. `NotFound` if no such deposit.
    SetDeleted {
        key: DepositKey,
        deleted: bool,
        at: Timestamp,
    },
    /// Destroys the deposit and every version. `NotFound` if no such deposit.
    Purge {
        key: DepositKey,
    },
    // --- Keyring rotation, re-wrap and seal migration (issue 5) ---
    /// Replaces one wrapped secret, only if it is still wrapped by `expected_kek` (otherwise
    /// `VersionConflict`; `NotFound` if the row is gone).
    Rewrap {
        id: WrappedId,
        expected_kek: u32,
        kek_version: u32,
        wrapped: Vec<u8>,
    },
    /// Deletes a keyring version under every seal. `InUse` if any wrapped row still uses it.
    RetireKek {
        version: u32,
    },
    /// Deletes every keyring row wrapped by seals other than `keep` (the end of a seal
    /// migration). `InvalidState`-like `InUse` if no row of `keep` exists.
    KeepOnlySeal {
        keep: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// A purge removed this many versions.
    Purged(u64),
}

/// Which deposits to list.
#[derive(Debug, Clone)]
pub struct DepositListing<'a> {
    pub owner: &'a ClientFingerprint,
    /// Only names starting with this (validated by the caller to contain only name characters).
    pub prefix: &'a str,
    /// Only names sorting strictly after this one (pagination).
    pub after: Option<&'a str>,
    pub limit: u32,
    pub include_deleted: bool,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies one change durably: when this returns `Ok`, the change survives a crash.
    async fn apply(&self, mutation: Mutation) -> StoreResult<Applied>;

    async fn load_keks(&self) -> StoreResult<Vec<KekRecord>>;

    async fn get_org(&self, name: &OrgName) -> StoreResult<Option<OrgRecord>>;
    async fn list_orgs(&self) -> StoreResult<Vec<OrgRecord>>;

    async fn get_client(&self, fp: &ClientFingerprint) -> StoreResult<Option<ClientRecord>>;
    async fn list_clients(
        &self,
        org: Option<&OrgName>,
        state: Option<ClientState>,
    ) -> StoreResult<Vec<ClientRecord>>;

    async fn get_deposit(&self, key: &DepositKey) -> StoreResult<Option<DepositRecord>>;
    /// The deposit header and one version (`None`: the current one), in one read.
    async fn get_version(
        &self,
        key: &DepositKey,
        version: Option<DepositVersion>,
    ) -> StoreResult<Option<(DepositRecord, VersionRecord)>>;
    async fn list_deposits(&self, q: DepositListing<'_>) -> StoreResult<Vec<DepositRecord>>;
    async fn list_versions(&self, key: &DepositKey) -> StoreResult<Vec<VersionMeta>>;

    /// Checks that the store answers (for health).
    async fn ping(&self) -> StoreResult<()>;

    // --- Keyring rotation, re-wrap and backups (issue 5) ---
    /// Rows of `kind` not wrapped by `current`, ordered by id, after `after` (pagination).
    async fn list_stale_wrapped(
        &self,
        kind: WrappedKind,
        current: u32,
        after: Option<&WrappedId>,
        limit: u32,
    ) -> StoreResult<Vec<WrappedRow>>;
    /// How many wrapped rows use each keyring version, per kind.
    async fn kek_usage(&self) -> StoreResult<Vec<KekUsage>>;
    /// Writes a consistent copy of the whole database to `dest` (which must not exist) while
    /// the store keeps serving.
    async fn snapshot(&self, dest: &std::path::Path) -> StoreResult<()>;
}
