//! The answer to `GET /v1/health`: readiness of each part of the server, its fingerprint and
//! the warnings an operator should act on.

use crate::ClientFingerprint;
use serde::{Deserialize, Serialize};

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
