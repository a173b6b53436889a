//! Organisations and how they admit clients: the auth mode, creating and listing
//! organisations, setting the auth secret or approval mode, and one-time registration tokens.

use super::secret::AuthSecret;
use crate::{OrgName, Timestamp};
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
