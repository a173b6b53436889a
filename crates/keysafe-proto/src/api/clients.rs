//! Registered clients: their lifecycle state and role, the registration request, the record
//! administrators and the client itself see, client pages, and disabling clients that never
//! used their registration.

use super::secret::AuthSecret;
use crate::{ClientFingerprint, ClientName, OrgName, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;

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
            recipient: None,
        };
        assert!(!format!("{req:?}").contains("hunter2"));
    }
}
