//! Seals, keyring rotation, integrity checks and backups: unsealing, the kinds of wrapped
//! secrets and how many rows of each a keyring version wraps, the keyring status, rotation and
//! retirement, the integrity report, and the backup request.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

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
}
