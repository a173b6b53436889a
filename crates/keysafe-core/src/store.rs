//! The storage interface. A store keeps records; it does no cryptography and makes no policy
//! decisions beyond the atomic checks a write needs (uniqueness, compare-and-set on a deposit's
//! current version). Every change goes through [`Store::apply`], so a backend can commit many
//! changes in one durable transaction (group commit) and, later, append audit records to the same
//! transaction.

use async_trait::async_trait;
use keysafe_proto::api::{Access, AuthMode, ClientRole, ClientState, Encoding};
use keysafe_proto::audit::{AuditCheckpoint, AuditEntry, AuditEvent};
use keysafe_proto::{
    ClientFingerprint, ClientName, DepositName, DepositVersion, GroupName, OrgName, Principal,
    Timestamp,
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
    /// The client's age recipient (public).
    pub recipient: Option<String>,
    pub token: TokenState,
    pub last_seen_at: Option<Timestamp>,
    pub state_reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A client's sequenced token, as the server keeps it: only SHA-256 hashes, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    /// The counter of the current token (0 at registration).
    pub counter: u64,
    /// Hash of the current token; `None` after an administrator reset it (the next request is
    /// issued a fresh one).
    pub hash: Option<String>,
    /// Tokens replaced within the grace window, still accepted for requests that were in
    /// flight when they were replaced (newest first, bounded).
    pub recent: Vec<ReplacedToken>,
    /// When the current token was issued.
    pub rotated_at: Timestamp,
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

/// Identifies a deposit: names are unique per owner (a client or a group).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepositKey {
    pub owner: Principal,
    pub name: DepositName,
}

/// A deposit's header row: which version is current and whether it is soft-deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositRecord {
    pub org: OrgName,
    pub owner: Principal,
    pub name: DepositName,
    pub current_version: DepositVersion,
    pub current_size: u64,
    pub deleted: bool,
    /// Bumped by every ACL change.
    pub acl_serial: u64,
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
    pub encoding: Encoding,
}

/// One stored version: metadata plus the sealed payload and its wrapped data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub meta: VersionMeta,
    pub kek_version: u32,
    pub wrapped_dek: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A replaced token's hash and when it was replaced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplacedToken {
    #[serde(rename = "h")]
    pub hash: String,
    #[serde(rename = "at")]
    pub replaced_at: Timestamp,
}

/// One ACL entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub grantee: Principal,
    pub access: Access,
    pub granted_by: ClientFingerprint,
    pub granted_at: Timestamp,
}

/// A group: its epochs (one identity each) and its members with the epochs wrapped for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub org: OrgName,
    pub name: GroupName,
    pub epoch: u64,
    /// (epoch, recipient), ascending.
    pub epochs: Vec<(u64, String)>,
    pub members: Vec<GroupMemberRecord>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberRecord {
    pub fingerprint: ClientFingerprint,
    /// Epochs whose identity is wrapped for this member, ascending.
    pub epochs: Vec<u64>,
}

/// A group identity of one epoch wrapped for one member (age ciphertext; opaque to the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKeyRecord {
    pub epoch: u64,
    pub member: ClientFingerprint,
    pub wrapped: Vec<u8>,
}

/// A one-time registration token (only its SHA-256 hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationTokenRecord {
    pub hash: String,
    pub org: OrgName,
    pub created_by: ClientFingerprint,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

// ---- audit trail (issue 6) ----

/// The audit signing key: an Ed25519 seed wrapped by a keyring version (re-wrapped by key
/// rotation like a data key), with its public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditKeyRecord {
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub kek_version: u32,
    pub wrapped: Vec<u8>,
    pub created_at: Timestamp,
}

/// Counts for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// (state, count) for every client state with at least one client.
    pub clients_by_state: Vec<(ClientState, u64)>,
    pub deposits: u64,
    pub deposit_versions: u64,
    /// Read connections open, and how many of them are idle.
    pub pool_size: u32,
    pub pool_idle: u32,
}

// ---- end audit trail ----
// --- Keyring rotation, re-wrap and seal migration (issue 5) ---------------------------------

/// A kind of row that holds a secret wrapped by the keyring. The re-wrap job walks each kind;
/// adding a table of KEK-wrapped rows means adding a variant here, its [`WrappedId`] variant, its
/// associated data (`service::rewrap::aad_for`) and its three SQL statements in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WrappedKind {
    /// `deposit_versions.wrapped_dek`.
    DepositVersion,
    /// `audit_signing_keys.wrapped` (issue 6): the seed of the key that signs audit checkpoints.
    AuditSigningKey,
}

impl WrappedKind {
    pub const ALL: &'static [WrappedKind] =
        &[WrappedKind::DepositVersion, WrappedKind::AuditSigningKey];

    pub fn as_str(self) -> &'static str {
        match self {
            WrappedKind::DepositVersion => "deposit_versions",
            WrappedKind::AuditSigningKey => "audit_signing_keys",
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
    /// The audit signing key (its public key is part of the associated data).
    AuditSigningKey { key_id: String, public_key: Vec<u8> },
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
    /// Fails with `AlreadyExists` if the fingerprint is registered. With `consume_token` (the hash
    /// of a one-time registration token), the token must be unused, unexpired at `at` and for the
    /// client's organisation, and is marked used in the same transaction; otherwise `NotFound`.
    InsertClient {
        client: ClientRecord,
        consume_token: Option<String>,
    },
    InsertRegistrationToken(RegistrationTokenRecord),
    /// Rotates (or, after a reset, re-issues) a client's token if its counter is still
    /// `expected_counter`; `Conflict` otherwise. Also records `at` as last seen.
    RotateToken {
        fingerprint: ClientFingerprint,
        expected_counter: u64,
        token: TokenState,
        at: Timestamp,
    },
    /// Marks a client `suspected-clone` with the reason. `NotFound` if no such client.
    MarkSuspectedClone {
        fingerprint: ClientFingerprint,
        reason: String,
        at: Timestamp,
    },
    /// Clears a client's token (the next request is issued a fresh one) and, if it was a
    /// suspected clone, makes it active again.
    ResetToken {
        fingerprint: ClientFingerprint,
        at: Timestamp,
    },
    /// Disables ordinary clients registered before `registered_before` that never made an
    /// authenticated request. Answers `Applied::Clients`.
    DisableUnactivated {
        registered_before: Timestamp,
        at: Timestamp,
    },
    /// Creates a group at epoch 1 with its members and their wrapped identities.
    /// `AlreadyExists` if the name is taken in the organisation.
    CreateGroup {
        org: OrgName,
        name: GroupName,
        recipient: String,
        keys: Vec<WrappedKeyRecord>,
        at: Timestamp,
    },
    /// Adds a member without keys (a current member admits it). `NotFound`: no such group.
    AddGroupMember {
        org: OrgName,
        name: GroupName,
        member: ClientFingerprint,
        at: Timestamp,
    },
    /// Stores identities wrapped for a member (existing ones are kept). `NotFound` if the member
    /// is not in the group.
    AdmitGroupMember {
        org: OrgName,
        name: GroupName,
        keys: Vec<WrappedKeyRecord>,
        at: Timestamp,
    },
    /// Removes a member and its wrapped keys and opens epoch `expected_epoch + 1` with a new
    /// identity wrapped for the remaining members. `Conflict` if the epoch moved.
    RemoveGroupMember {
        org: OrgName,
        name: GroupName,
        member: ClientFingerprint,
        expected_epoch: u64,
        recipient: String,
        keys: Vec<WrappedKeyRecord>,
        at: Timestamp,
    },
    /// Replaces a deposit's ACL and the listed versions' sealed payloads, if the current version
    /// and ACL serial are still the expected ones (`Conflict` otherwise). Bumps the ACL serial.
    SetAcl {
        key: DepositKey,
        expected_current: DepositVersion,
        expected_acl_serial: u64,
        grants: Vec<GrantRecord>,
        replace: Vec<VersionRecord>,
        at: Timestamp,
    },
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
        /// When set, the deposit's ACL serial must still be this (else `VersionConflict`).
        expected_acl_serial: Option<u64>,
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
    // ---- audit trail (issue 6) ----
    /// Stores the audit signing key. `AlreadyExists` if one is stored already.
    InsertAuditKey(AuditKeyRecord),
    /// Stores a signed checkpoint of the audit chain.
    InsertAuditCheckpoint(AuditCheckpoint),
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
    /// The clients a bulk change touched.
    Clients(Vec<ClientFingerprint>),
}

/// Which deposits to list.
#[derive(Debug, Clone)]
pub struct DepositListing<'a> {
    pub owner: &'a Principal,
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
    async fn apply(&self, mutation: Mutation) -> StoreResult<Applied> {
        self.apply_audited(mutation, None).await
    }

    /// Applies one change and appends its audit entry in the same transaction: both commit or
    /// neither does (a failing audit insert rolls the change back).
    async fn apply_audited(
        &self,
        mutation: Mutation,
        audit: Option<AuditEvent>,
    ) -> StoreResult<Applied>;

    // ---- audit trail (issue 6) ----
    /// Appends entries (reads, refusals) to the audit chain, durably, in order.
    async fn append_audit(&self, events: std::sync::Arc<Vec<AuditEvent>>) -> StoreResult<()>;
    /// Entries with `seq >= from` (and `time >= since`), ascending, at most `limit`.
    async fn audit_entries(
        &self,
        from: u64,
        since: Option<Timestamp>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// Checkpoints with `seq >= from`, ascending.
    async fn audit_checkpoints(&self, from: u64) -> StoreResult<Vec<AuditCheckpoint>>;
    /// The last committed entry's (seq, hash), as the writer holds it (`(0, GENESIS)` when empty).
    fn audit_head(&self) -> (u64, String);
    async fn audit_signing_key(&self) -> StoreResult<Option<AuditKeyRecord>>;
    async fn stats(&self) -> StoreResult<StoreStats>;
    // ---- end audit trail ----

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

    async fn get_grants(&self, key: &DepositKey) -> StoreResult<Vec<GrantRecord>>;
    /// Deposits with a grant to any of `grantees`, with that grant.
    async fn list_shared(
        &self,
        grantees: &[Principal],
    ) -> StoreResult<Vec<(DepositRecord, GrantRecord)>>;

    async fn get_group(&self, org: &OrgName, name: &GroupName) -> StoreResult<Option<GroupRecord>>;
    /// Groups of an organisation (all when `None`), or only those `member` belongs to.
    async fn list_groups(
        &self,
        org: Option<&OrgName>,
        member: Option<&ClientFingerprint>,
    ) -> StoreResult<Vec<GroupRecord>>;
    /// The identities of every epoch wrapped for `member`.
    async fn group_keys(
        &self,
        org: &OrgName,
        name: &GroupName,
        member: &ClientFingerprint,
    ) -> StoreResult<Vec<WrappedKeyRecord>>;
    /// The groups of `org` that `member` belongs to (names only: the access check's fast path).
    async fn member_groups(
        &self,
        org: &OrgName,
        member: &ClientFingerprint,
    ) -> StoreResult<Vec<GroupName>>;

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
