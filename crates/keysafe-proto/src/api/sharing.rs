//! Sharing deposits: [`Access`] levels, grants and a deposit's ACL, the ACL update that
//! re-encrypts every version atomically, the deposits shared with the caller, and the recipient
//! lookup.

use crate::{ClientFingerprint, DepositName, DepositVersion, Timestamp};
use serde::{Deserialize, Serialize};

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
