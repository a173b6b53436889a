//! Request and response bodies of the lifecycle operations: deleting organisations, clients and
//! groups (with a dry run that says what would go), unused registration tokens, and pages of
//! the client listing. Re-exported from [`crate::api`]; docs/api.md documents each endpoint.

use crate::{ClientFingerprint, GroupName, OrgName, Timestamp};
use serde::{Deserialize, Serialize};

/// `DELETE /v1/admin/...?dry_run=`: whether to only say what the deletion would do.
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// `true`: check and report, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `DELETE /v1/admin/orgs/{name}`: what went with the organisation (or would, on a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrgDeletion {
    pub name: OrgName,
    /// `true`: nothing was deleted; this is what the deletion would do.
    pub dry_run: bool,
    /// Registration tokens that were never used, deleted with it.
    pub unused_tokens: u64,
}

/// `DELETE /v1/admin/clients/{fingerprint}`: what went with the client (or would).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientDeletion {
    pub fingerprint: ClientFingerprint,
    pub org: OrgName,
    pub dry_run: bool,
    /// Groups it was a member of (`ORG/NAME`): its membership and the group identities wrapped
    /// for it are gone; the groups keep their epoch.
    pub memberships: Vec<String>,
    /// How many deposits granted it access: those grants are gone (each deposit's ACL serial
    /// moved on).
    pub grants: u64,
    /// The first of those deposits, `OWNER:NAME`.
    pub grants_sample: Vec<String>,
}

/// `DELETE /v1/admin/groups/{org}/{name}`: what went with the group (or would).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupDeletion {
    pub org: OrgName,
    pub name: GroupName,
    pub dry_run: bool,
    /// Its members, whose memberships and wrapped identities are gone (the clients stay).
    pub members: u64,
}

/// A registration token that was never used, as administrators see it: never the token, only
/// an id made of the first characters of its SHA-256 hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistrationTokenInfo {
    /// The first 12 hex characters of the token's hash; any unambiguous prefix of at least 6
    /// names it for revocation.
    pub id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// Past its expiry: it registers nobody, and is listed until revoked or its organisation
    /// is deleted.
    pub expired: bool,
    /// The administrator that minted it.
    pub created_by: ClientFingerprint,
}

impl RegistrationTokenInfo {
    /// Characters of the hash an id shows.
    pub const ID_LEN: usize = 12;
    /// The shortest prefix a revocation accepts.
    pub const MIN_PREFIX: usize = 6;
}

/// `GET /v1/admin/orgs/{name}/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistrationTokenList {
    pub org: OrgName,
    /// By creation time.
    pub tokens: Vec<RegistrationTokenInfo>,
}

/// `DELETE /v1/admin/orgs/{name}/tokens[/{id}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevokedTokens {
    pub org: OrgName,
    /// How many unused tokens were deleted.
    pub revoked: u64,
}

/// `GET /v1/admin/clients?org=&state=&limit=&after=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClientListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// `pending`, `active`, `disabled` or `suspected-clone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// At most this many (default and maximum [`ClientListQuery::MAX_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next_after` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl ClientListQuery {
    pub const MAX_LIMIT: u32 = 1000;
}
