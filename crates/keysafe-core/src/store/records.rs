//! The records a store keeps, as the domain sees them. Plain data: no backend's types, no table
//! names.

use keysafe_proto::api::{Access, AuthMode, ClientRole, ClientState, Encoding, WrappedKind};
use keysafe_proto::{
    ClientFingerprint, ClientName, DepositName, DepositVersion, GroupName, OrgName, Principal,
    Timestamp,
};

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
    /// The row's MAC as stored (see `AccessRow`); set by the store on every write, ignored in
    /// a new record (`InsertClient`).
    pub mac: Option<Vec<u8>>,
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
    /// The current token has been presented since it was issued, so the client is known to
    /// hold it: a replaced token presented now is an in-flight request or a copy, never an
    /// answer that was lost, and gets no copy of the current token.
    pub confirmed: bool,
    /// How the current token was derived from the keyring, so that the server can issue the
    /// same token again to a client whose answer was lost; `None` for a token that cannot be
    /// derived again (random: issued at registration or while sealed).
    pub derivation: Option<TokenDerivation>,
}

/// What derived a sequenced token, besides the client's fingerprint and the counter: the
/// keyring version whose key-encryption key the token key is derived from, and a random salt.
/// Stored in the clear: without the keyring they reveal nothing about the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDerivation {
    pub kek_version: u32,
    pub salt: Vec<u8>,
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
    /// The row's MAC as stored (see `AccessRow`); set by the store on every write.
    pub mac: Option<Vec<u8>>,
    /// The highest version number stored for the deposit, read with the header: a header
    /// whose current version is below it was rolled back (ADR 0013).
    pub newest_version: u64,
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
    /// The row's MAC as stored (see `AccessRow`); set by the store on every write, ignored in
    /// a new grant (`SetAcl`).
    pub mac: Option<Vec<u8>>,
}

/// A group: its epochs (one identity each) and its members with the epochs wrapped for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub org: OrgName,
    pub name: GroupName,
    pub epoch: u64,
    /// (epoch, recipient), ascending.
    pub epochs: Vec<(u64, String)>,
    /// The stored MAC of each epoch row, in the order of `epochs` (see `AccessRow`).
    pub epoch_macs: Vec<Option<Vec<u8>>>,
    pub members: Vec<GroupMemberRecord>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberRecord {
    pub fingerprint: ClientFingerprint,
    /// Epochs whose identity is wrapped for this member, ascending.
    pub epochs: Vec<u64>,
    /// The membership row's MAC as stored (see `AccessRow`).
    pub mac: Option<Vec<u8>>,
}

/// A group a client belongs to, with its membership row's MAC as stored (see `AccessRow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberGroup {
    pub name: GroupName,
    pub mac: Option<Vec<u8>>,
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
    /// (state, count) for every client state with at least one client, ordered by state name.
    pub clients_by_state: Vec<(ClientState, u64)>,
    /// Deposits, soft-deleted ones included.
    pub deposits: u64,
    /// Stored versions of every deposit.
    pub deposit_versions: u64,
    /// Connections the store holds open to its database for reads, and how many are idle.
    pub pool_size: u32,
    pub pool_idle: u32,
}

/// A point in the audit chain: the sequence number and hash of its last entry, or
/// `(0, GENESIS_HASH)` before the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

impl AuditHead {
    /// The head of an empty chain.
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: keysafe_proto::audit::GENESIS_HASH.to_owned(),
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
    /// The cluster's TLS key (the fingerprint of its public key is part of the associated
    /// data).
    ClusterTlsKey { fingerprint: ClientFingerprint },
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

/// Which deposits to list. Names compare as bytes (ASCII order: `A` < `_` < `a`), whatever the
/// database's collation, so pages follow one another the same way on every backend.
#[derive(Debug, Clone)]
pub struct DepositListing<'a> {
    pub owner: &'a Principal,
    /// Only names starting with this (validated by the caller to contain only name characters;
    /// empty for all).
    pub prefix: &'a str,
    /// Only names sorting strictly after this one (pagination: the last name of the previous
    /// page).
    pub after: Option<&'a str>,
    /// At most this many.
    pub limit: u32,
    /// Soft-deleted deposits too.
    pub include_deleted: bool,
}
