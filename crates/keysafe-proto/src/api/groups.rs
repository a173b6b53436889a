//! Groups of clients sharing an age identity: members and their wrapped keys, creating a group,
//! the caller's keys of each epoch, admitting a member, and adding or removing members.

use crate::{ClientFingerprint, GroupName, OrgName, Timestamp};
use serde::{Deserialize, Serialize};

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
