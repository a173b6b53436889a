//! Request and response bodies of the HTTP API (JSON). docs/api.md documents each endpoint.

use crate::{ClientFingerprint, ClientName, DepositName, DepositVersion, OrgName, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when the server can serve deposits.
    pub status: String,
    pub version: String,
    /// The server's own fingerprint, so a client can cross-check what it pinned.
    pub fingerprint: ClientFingerprint,
    /// The seal kind (`file`, `passphrase`, `pkcs11`) when unsealed; absent while sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
    /// Why the server is sealed, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_reason: Option<String>,
}

/// The lifecycle state of a registered client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientState {
    /// Registered into an organisation in approval mode; waits for an administrator.
    Pending,
    /// May use the API.
    Active,
    /// Switched off by an administrator; refused everywhere.
    Disabled,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Pending => "pending",
            ClientState::Active => "active",
            ClientState::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(ClientState::Pending),
            "active" => Some(ClientState::Active),
            "disabled" => Some(ClientState::Disabled),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub org: OrgName,
    /// The organisation's auth secret. May be omitted for an organisation in approval mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<AuthSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ClientName>,
}

/// A registered client as administrators and the client itself see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub fingerprint: ClientFingerprint,
    pub org: OrgName,
    #[serde(default)]
    pub name: Option<ClientName>,
    pub state: ClientState,
    pub role: ClientRole,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientList {
    pub clients: Vec<ClientInfo>,
}

/// How an organisation admits new clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgCreateRequest {
    pub name: OrgName,
    #[serde(default)]
    pub contacts: Vec<String>,
}

/// The answer to creating an organisation: the auth secret is shown this once and never again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgCreated {
    pub name: OrgName,
    pub auth_secret: AuthSecret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgInfo {
    pub name: OrgName,
    pub contacts: Vec<String>,
    pub auth_mode: AuthMode,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgList {
    pub orgs: Vec<OrgInfo>,
}

/// `PUT /v1/admin/orgs/{name}/auth`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum OrgSetAuthRequest {
    /// Generate a new random secret (returned once).
    Random,
    /// Use this secret (at least [`AuthSecret::MIN_LEN`] characters).
    Secret { secret: AuthSecret },
    /// Switch to approval mode; any old secret stops working.
    Approval,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgSetAuthResponse {
    pub name: OrgName,
    pub auth_mode: AuthMode,
    /// Present only when the server generated the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<AuthSecret>,
}

/// A deposit as listed by its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositInfo {
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
}

impl ListQuery {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepositList {
    pub deposits: Vec<DepositInfo>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// One version of a deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: DepositVersion,
    pub size: u64,
    pub created_at: Timestamp,
    pub creator: ClientFingerprint,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionList {
    pub name: DepositName,
    pub deleted: bool,
    pub versions: Vec<VersionInfo>,
}

/// The answer to a put: the version just stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub name: DepositName,
    pub version: DepositVersion,
    pub size: u64,
    pub created_at: Timestamp,
}

/// The answer to a purge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeResponse {
    pub name: DepositName,
    pub purged_versions: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = AuthSecret::new("hunter2-hunter2-hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let req = RegisterRequest {
            org: OrgName::parse("acme").unwrap(),
            auth_secret: Some(s),
            name: None,
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

// --- Seals, keyring rotation and backups (issue 5) ------------------------------------------

/// `POST /v1/admin/unseal`.
#[derive(Clone, Serialize, Deserialize)]
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

/// How many wrapped rows of one kind use a keyring version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekUsageInfo {
    /// `deposit_versions`, ...
    pub kind: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekVersionInfo {
    pub version: u32,
    pub created_at: Timestamp,
    pub current: bool,
    pub usage: Vec<KekUsageInfo>,
    /// Total data keys (all kinds) wrapped by this version.
    pub data_keys: u64,
}

/// `GET /v1/admin/keyring`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// `POST /v1/admin/keyring/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringRotated {
    pub version: u32,
}

/// `POST /v1/admin/keyring/retire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringRetireRequest {
    pub version: u32,
}

/// `POST /v1/admin/backup`: the answer is the age-encrypted backup file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRequest {
    /// age X25519 recipients (`age1...`); at least one.
    pub recipients: Vec<String>,
    /// Include the root key file (file seal only). Without it, the backup alone cannot decrypt
    /// anything.
    #[serde(default)]
    pub include_root_key: bool,
}
