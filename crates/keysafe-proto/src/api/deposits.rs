//! Deposits and their versions: listings and their query, the answers to a put and a purge,
//! and the payload [`Encoding`] label.

use crate::{ClientFingerprint, DepositName, DepositVersion, Timestamp};
use serde::{Deserialize, Serialize};

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

/// The answer to a purge.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PurgeResponse {
    pub name: DepositName,
    pub purged_versions: u64,
}
