//! Request and response bodies of the HTTP API (JSON). docs/api.md documents each endpoint.

use crate::{
    ClientFingerprint, ClientName, DepositName, DepositVersion, GroupName, OrgName, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

pub use crate::lifecycle::*;

/// An organisation auth secret (or any other bearer secret) in transit. Zeroised on drop; its
/// `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AuthSecret(Zeroizing<String>);

impl AuthSecret {
    /// The shortest secret an administrator may set by hand.
    pub const MIN_LEN: usize = 16;

    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AuthSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthSecret([redacted])")
    }
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` when the server can serve deposits.
    pub status: String,
    pub version: String,
    /// The server's own fingerprint, so a client can cross-check what it pinned.
    pub fingerprint: ClientFingerprint,
    /// Readiness of each part: `database` (`ok`, `unavailable`), `audit` (`ok`, `failing`,
    /// `queue_full`), `seal` (`ok`, `sealed`); and, informational only (it never makes the
    /// status other than `ok`), `tls_certificate` (`ok`, `expires_soon`, `expired`). Older
    /// servers send none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<String, String>,
    /// The seal kind (`file`, `passphrase`, `pkcs11`) when unsealed; absent while sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
    /// Why the server is sealed, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_reason: Option<String>,
    /// Things an operator should act on soon that do not make the server unready (the TLS
    /// certificate expires within 30 days). Older servers send none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The lifecycle state of a registered client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClientState {
    /// Registered into an organisation in approval mode; waits for an administrator.
    Pending,
    /// May use the API.
    Active,
    /// Switched off by an administrator; refused everywhere.
    Disabled,
    /// Its sequenced token diverged: a copy of its identity is in use elsewhere. Refused until an
    /// administrator resets its token.
    SuspectedClone,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Pending => "pending",
            ClientState::Active => "active",
            ClientState::Disabled => "disabled",
            ClientState::SuspectedClone => "suspected-clone",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(ClientState::Pending),
            "active" => Some(ClientState::Active),
            "disabled" => Some(ClientState::Disabled),
            "suspected-clone" => Some(ClientState::SuspectedClone),
            _ => None,
        }
    }
}

impl fmt::Display for ClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client may do beyond its own deposits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientRole {
    /// An ordinary client: its own deposits only.
    Client,
    /// A server administrator: organisations and clients, over the same mTLS API.
    Admin,
}

impl ClientRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientRole::Client => "client",
            ClientRole::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client" => Some(ClientRole::Client),
            "admin" => Some(ClientRole::Admin),
            _ => None,
        }
    }
}

/// `POST /v1/register`: the caller's certificate (mutual TLS) is the identity being registered.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub org: OrgName,
    /// The organisation's auth secret. May be omitted for an organisation in approval mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<AuthSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ClientName>,
    /// The client's age X25519 recipient (`age1...`), to which deposits are encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
}

/// A registered client as administrators and the client itself see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientInfo {
    pub fingerprint: ClientFingerprint,
    pub org: OrgName,
    #[serde(default)]
    pub name: Option<ClientName>,
    pub state: ClientState,
    pub role: ClientRole,
    /// The client's age recipient; absent for clients that bring their own encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Why the client is in its state, when the server put it there (for example, the token
    /// divergence that made it a suspected clone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// When the client last authenticated (updated at most once per token rotation interval);
    /// absent if it never used its registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<Timestamp>,
    /// The counter of the client's current sequenced token.
    #[serde(default)]
    pub token_counter: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientList {
    pub clients: Vec<ClientInfo>,
    /// More clients follow: pass this as `after` for the next page. Absent on the last page
    /// (and in answers that are not pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// How an organisation admits new clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Registration with the right auth secret makes an active client at once.
    Secret,
    /// Registrations wait as `pending` until an administrator approves them.
    Approval,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Secret => "secret",
            AuthMode::Approval => "approval",
        }
    }
}

/// `POST /v1/admin/orgs`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgCreateRequest {
    pub name: OrgName,
    #[serde(default)]
    pub contacts: Vec<String>,
}

/// The answer to creating an organisation: the auth secret is shown this once and never again.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrgCreated {
    pub name: OrgName,
    pub auth_secret: AuthSecret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrgInfo {
    pub name: OrgName,
    pub contacts: Vec<String>,
    pub auth_mode: AuthMode,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrgList {
    pub orgs: Vec<OrgInfo>,
}

/// `PUT /v1/admin/orgs/{name}/auth`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum OrgSetAuthRequest {
    /// Generate a new random secret (returned once).
    Random,
    /// Use this secret (at least [`AuthSecret::MIN_LEN`] characters).
    Secret { secret: AuthSecret },
    /// Switch to approval mode; any old secret stops working.
    Approval,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrgSetAuthResponse {
    pub name: OrgName,
    pub auth_mode: AuthMode,
    /// Present only when the server generated the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<AuthSecret>,
}

/// A deposit as listed by its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DepositInfo {
    /// The owner, relative to the caller's organisation: a fingerprint or `group:NAME`.
    pub owner: String,
    pub name: DepositName,
    /// The current (latest) version.
    pub version: DepositVersion,
    /// Size in bytes of the current version's payload.
    pub size: u64,
    pub deleted: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `GET /v1/deposits?prefix=&limit=&page_token=&deleted=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    /// Include soft-deleted deposits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// List another owner's deposits: `group:NAME` for a group the caller belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl ListQuery {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DepositList {
    pub deposits: Vec<DepositInfo>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// One version of a deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub version: DepositVersion,
    pub size: u64,
    pub created_at: Timestamp,
    pub creator: ClientFingerprint,
    pub encoding: Encoding,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionList {
    pub name: DepositName,
    pub deleted: bool,
    pub versions: Vec<VersionInfo>,
}

/// The answer to a put: the version just stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PutResponse {
    pub name: DepositName,
    pub version: DepositVersion,
    pub size: u64,
    pub created_at: Timestamp,
}

/// How a deposit payload is encoded. The server never looks inside; it keeps the label so a reader
/// knows whether to decrypt.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Bytes as the client gave them (clients that bring their own encryption).
    #[default]
    Raw,
    /// An age file (age-encryption.org/v1) encrypted on the client to the deposit's recipients.
    Age,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Age => "age",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "raw" => Some(Encoding::Raw),
            "age" => Some(Encoding::Age),
            _ => None,
        }
    }
}

/// What a grant allows (ordered: write includes read).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Get any version.
    Read,
    /// Get, and put new versions (encrypted to the deposit's recipients).
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            _ => None,
        }
    }
}

/// One entry of a deposit's access-control list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    /// A fingerprint or `group:NAME`.
    pub grantee: String,
    pub access: Access,
    pub granted_by: ClientFingerprint,
    pub granted_at: Timestamp,
}

/// `GET /v1/deposits/{name}:acl[?owner=]`: the ACL and everything a writer needs to encrypt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Acl {
    pub owner: String,
    pub name: DepositName,
    /// The current version when the ACL was read.
    pub version: DepositVersion,
    /// Changes whenever the ACL changes; a put or share must name the serial it encrypted for.
    pub acl_serial: u64,
    pub grants: Vec<Grant>,
    /// Every age recipient a new version must be encrypted to: the owner (or the owning group's
    /// current recipient) first, then each grantee's.
    pub recipients: Vec<String>,
    /// Whose each recipient is, in the order of `recipients`: the owner (or owning group) and
    /// the grantees, in the wire form (`FP`, `group:NAME`). Older servers send none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipient_principals: Vec<RecipientInfo>,
    /// The caller's own access: `owner`, `write` or `read`.
    pub caller_access: String,
}

/// The change an ACL update makes.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AclChange {
    Grant { grantee: String, access: Access },
    Revoke { grantee: String },
}

/// One version re-encrypted by the client for the new recipient set.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReencryptedVersion {
    pub version: DepositVersion,
    /// Base64 (standard alphabet) of the new age ciphertext.
    pub payload: String,
}

/// `POST /v1/deposits/{name}:share[?owner=]`: changes the ACL and replaces every age-encoded
/// version with its re-encryption, atomically.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclUpdate {
    pub change: AclChange,
    /// The current version the client re-encrypted up to.
    pub expected_version: DepositVersion,
    pub expected_acl_serial: u64,
    pub versions: Vec<ReencryptedVersion>,
}

/// A deposit somebody else owns that the caller may read.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SharedDeposit {
    pub owner: String,
    pub name: DepositName,
    pub version: DepositVersion,
    pub access: Access,
    /// The grantee the access comes through: the caller's fingerprint or one of its groups.
    pub via: String,
}

/// `GET /v1/shared`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SharedList {
    pub deposits: Vec<SharedDeposit>,
}

/// `GET /v1/recipients?principal=`: the age recipient to encrypt to for a client or group of the
/// caller's organisation.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecipientInfo {
    pub principal: String,
    pub recipient: String,
}

/// A group member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupMember {
    pub fingerprint: ClientFingerprint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Holds the group identity of the current epoch (false: waits for `group admit`).
    pub has_current_key: bool,
    /// Epochs whose identity is wrapped for this member.
    pub epochs: Vec<u64>,
}

/// A group of clients sharing an age identity, held on the server only wrapped to each member.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupInfo {
    pub org: OrgName,
    pub name: GroupName,
    /// The current epoch: bumped when a member is removed (new identity for later writes).
    pub epoch: u64,
    /// The current epoch's recipient.
    pub recipient: String,
    pub members: Vec<GroupMember>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupList {
    pub groups: Vec<GroupInfo>,
}

/// A group identity wrapped (age-encrypted) for one member.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberKey {
    pub fingerprint: ClientFingerprint,
    /// Base64 of the age ciphertext of the group identity, encrypted to the member's recipient.
    pub wrapped: String,
}

/// `POST /v1/groups` (a client creates a group in its own organisation, itself a member) and
/// `POST /v1/admin/groups` (an administrator, naming the organisation).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupCreateRequest {
    /// Required on the admin route; on the client route it must be absent or the caller's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<OrgName>,
    pub name: GroupName,
    /// The new group identity's recipient.
    pub recipient: String,
    /// At least one member, each with the identity wrapped for it.
    pub members: Vec<MemberKey>,
}

/// One epoch's identity, wrapped for the caller.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EpochKey {
    pub epoch: u64,
    pub recipient: String,
    /// Base64 of the age ciphertext of the identity, encrypted to the caller's recipient.
    pub wrapped: String,
}

/// `GET /v1/groups/{name}/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupKeys {
    pub group: GroupName,
    pub epoch: u64,
    pub keys: Vec<EpochKey>,
}

/// One epoch's identity wrapped for a member being admitted.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WrappedEpoch {
    pub epoch: u64,
    pub wrapped: String,
}

/// `POST /v1/groups/{name}/admit`: a member hands the identities it holds to another member.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupAdmitRequest {
    pub member: ClientFingerprint,
    pub keys: Vec<WrappedEpoch>,
}

/// `POST /v1/admin/groups/{org}/{name}/add-member`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupAddMember {
    pub member: ClientFingerprint,
}

/// `POST /v1/admin/groups/{org}/{name}/remove-member`: removes a member and starts a new epoch
/// whose identity is wrapped for every remaining member.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRemoveMember {
    pub member: ClientFingerprint,
    /// The epoch the administrator saw (a concurrent removal is a conflict).
    pub expected_epoch: u64,
    pub recipient: String,
    pub keys: Vec<MemberKey>,
}

/// `POST /v1/admin/orgs/{name}/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationTokenRequest {
    /// Lifetime in seconds (default 3600, at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// A one-time registration token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistrationToken {
    pub org: OrgName,
    pub token: AuthSecret,
    pub expires_at: Timestamp,
}

/// `POST /v1/admin/clients/disable-unactivated`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableUnactivatedRequest {
    /// Clients registered longer ago than this and never used since are disabled.
    pub older_than_seconds: u64,
    /// `true`: answer the clients that would be disabled, disable none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// The answer to a purge.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PurgeResponse {
    pub name: DepositName,
    pub purged_versions: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Servers send API names; an older server's table-like names are read as the same kinds,
    /// and a kind this client does not know is kept as sent.
    #[test]
    fn wrapped_kinds_read_both_spellings() {
        for (old, new, kind) in [
            (
                "deposit_versions",
                "deposit-version",
                WrappedKind::DepositVersion,
            ),
            (
                "audit_signing_keys",
                "audit-signing-key",
                WrappedKind::AuditSigningKey,
            ),
        ] {
            assert_eq!(WrappedKind::parse(old), Some(kind));
            assert_eq!(WrappedKind::parse(new), Some(kind));
            assert_eq!(kind.as_str(), new);
            for sent in [old, new] {
                let u: KekUsageInfo =
                    serde_json::from_str(&format!(r#"{{"kind":"{sent}","count":3}}"#)).unwrap();
                assert_eq!(u.kind, new);
                assert_eq!(u.wrapped_kind(), Some(kind));
                assert_eq!(
                    serde_json::to_string(&u).unwrap(),
                    format!(r#"{{"kind":"{new}","count":3}}"#)
                );
            }
        }
        let future: KekUsageInfo =
            serde_json::from_str(r#"{"kind":"volume-key","count":1}"#).unwrap();
        assert_eq!(future.kind, "volume-key");
        assert_eq!(future.wrapped_kind(), None);
        assert_eq!(WrappedKind::parse("deposit_version"), None);
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = AuthSecret::new("hunter2-hunter2-hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let req = RegisterRequest {
            org: OrgName::parse("acme").unwrap(),
            auth_secret: Some(s),
            name: None,
            recipient: None,
        };
        assert!(!format!("{req:?}").contains("hunter2"));
    }

    #[test]
    fn set_auth_wire_form() {
        let r: OrgSetAuthRequest = serde_json::from_str(r#"{"mode":"random"}"#).unwrap();
        assert!(matches!(r, OrgSetAuthRequest::Random));
        let r: OrgSetAuthRequest =
            serde_json::from_str(r#"{"mode":"secret","secret":"abc"}"#).unwrap();
        assert!(matches!(r, OrgSetAuthRequest::Secret { .. }));
        assert!(serde_json::from_str::<OrgSetAuthRequest>(r#"{"mode":"nope"}"#).is_err());
    }
}

// --- Seals, keyring rotation and backups ------------------------------------------

/// `POST /v1/admin/unseal`.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnsealRequest {
    pub passphrase: String,
}

impl std::fmt::Debug for UnsealRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsealRequest { passphrase: [redacted] }")
    }
}

impl Drop for UnsealRequest {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.passphrase);
    }
}

/// A kind of stored secret wrapped by the keyring: what a keyring version's usage is counted
/// by, and what the re-wrap job walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WrappedKind {
    /// A deposit version's data key.
    DepositVersion,
    /// The seed of the key that signs audit checkpoints.
    AuditSigningKey,
    /// The private key of the cluster's TLS identity, which nodes joining the cluster take.
    ClusterTlsKey,
}

impl WrappedKind {
    pub const ALL: &'static [WrappedKind] = &[
        WrappedKind::DepositVersion,
        WrappedKind::AuditSigningKey,
        WrappedKind::ClusterTlsKey,
    ];

    /// The API name (`deposit-version`, `audit-signing-key`, `cluster-tls-key`).
    pub fn as_str(self) -> &'static str {
        match self {
            WrappedKind::DepositVersion => "deposit-version",
            WrappedKind::AuditSigningKey => "audit-signing-key",
            WrappedKind::ClusterTlsKey => "cluster-tls-key",
        }
    }

    /// Parses the API name, or the name servers sent before the API names existed
    /// (`deposit_versions`, `audit_signing_keys`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "deposit-version" | "deposit_versions" => Some(WrappedKind::DepositVersion),
            "audit-signing-key" | "audit_signing_keys" => Some(WrappedKind::AuditSigningKey),
            "cluster-tls-key" => Some(WrappedKind::ClusterTlsKey),
            _ => None,
        }
    }
}

impl fmt::Display for WrappedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many wrapped rows of one kind use a keyring version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KekUsageInfo {
    /// A [`WrappedKind`] API name (`deposit-version`, `audit-signing-key`). Kept as text so a
    /// client reads kinds a newer server adds; an older server's names are read as the API
    /// names.
    #[serde(deserialize_with = "wrapped_kind_name")]
    pub kind: String,
    pub count: u64,
}

impl KekUsageInfo {
    /// The kind, if this client knows it.
    pub fn wrapped_kind(&self) -> Option<WrappedKind> {
        WrappedKind::parse(&self.kind)
    }
}

/// Reads a wrapped-row kind, turning an older server's name into the API name.
fn wrapped_kind_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    Ok(match WrappedKind::parse(&s) {
        Some(k) => k.as_str().to_owned(),
        None => s,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KekVersionInfo {
    pub version: u32,
    pub created_at: Timestamp,
    pub current: bool,
    pub usage: Vec<KekUsageInfo>,
    /// Deposit data keys wrapped by this version (`usage` lists every kind of wrapped row).
    pub data_keys: u64,
}

/// `GET /v1/admin/keyring`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyringStatusInfo {
    pub sealed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_reason: Option<String>,
    /// The seal in use (`file`, `passphrase`, `pkcs11;mode=...;token=...;key=...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
    pub per_deposit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u32>,
    pub versions: Vec<KekVersionInfo>,
    /// Data keys still waiting to be re-wrapped onto the current version.
    pub rewrap_pending: u64,
}

/// `POST /v1/admin/integrity/verify`: every authenticated access row checked (ADR 0013).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntegrityReport {
    /// How many authenticated rows were checked.
    pub checked: u64,
    /// Each row that fails, by kind and logical key; empty when every row verifies.
    pub failures: Vec<IntegrityFailure>,
}

/// One authenticated row that fails its check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntegrityFailure {
    /// `client`, `deposit`, `grant`, `group-member`, `group-epoch`, `group`, `backfill-marker`.
    pub kind: String,
    /// The row's logical key (a fingerprint, `owner/name`, ...).
    pub key: String,
    pub reason: String,
}

/// `POST /v1/admin/keyring/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyringRotated {
    pub version: u32,
}

/// `POST /v1/admin/keyring/retire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyringRetireRequest {
    pub version: u32,
}

/// `POST /v1/admin/backup`: the answer is the age-encrypted backup file, streamed. The
/// key-bearing parts are refused (403) unless every recipient is pinned in the server's
/// `[backup] key_recipients`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// age X25519 recipients (`age1...`); at least one.
    pub recipients: Vec<String>,
    /// Include the root key file (file seal only). With it, the backup alone opens every
    /// deposit.
    #[serde(default)]
    pub include_root_key: bool,
    /// Include the server's TLS private key (needed to restore the same fingerprint).
    #[serde(default)]
    pub include_tls_key: bool,
    /// Include the administrator identity `init` made.
    #[serde(default)]
    pub include_admin_identity: bool,
}
