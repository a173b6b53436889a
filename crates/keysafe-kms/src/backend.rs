//! All persistence of the gateway goes through [`KeyBackend`]. The production implementation is
//! [`crate::deposits::DepositBackend`] (keysafe deposits through the client library); the only
//! other one, [`MemoryBackend`], exists for pure unit tests and is never used by the gateway.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Metadata of a Hadoop key, as `KeyProvider.Metadata` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    pub cipher: String,
    /// Key length in bits.
    pub length: u32,
    pub description: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Creation time of the key (version 0), epoch milliseconds.
    pub created: i64,
}

/// One version of a Hadoop key: its number, material, and the key's metadata as of this version.
#[derive(Clone)]
pub struct KeyVersionRecord {
    pub name: String,
    pub version: u32,
    pub material: Zeroizing<Vec<u8>>,
    pub meta: KeyMeta,
}

impl std::fmt::Debug for KeyVersionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVersionRecord")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("material", &"[redacted]")
            .field("meta", &self.meta)
            .finish()
    }
}

impl KeyVersionRecord {
    pub fn version_name(&self) -> String {
        version_name(&self.name, self.version)
    }
}

/// `KeyProvider.buildVersionName`.
pub fn version_name(name: &str, n: u32) -> String {
    format!("{name}@{n}")
}

/// `KeyProvider.getBaseName` plus the number: splits at the **last** `@`.
pub fn split_version_name(vn: &str) -> Option<(&str, u32)> {
    let (name, n) = vn.rsplit_once('@')?;
    let n: u32 = n.parse().ok()?;
    Some((name, n))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("already exists")]
    AlreadyExists,
    #[error("not found")]
    NotFound,
    /// Somebody else wrote first (compare-and-set failed).
    #[error("conflict: written concurrently")]
    Conflict,
    /// The Hadoop key name cannot be stored.
    #[error("{0}")]
    InvalidName(String),
    /// keysafe refused what was sent as too large (HTTP 413): the caller's fault, not an outage.
    #[error("the key record is larger than keysafe accepts: {0}")]
    TooLarge(String),
    /// keysafe refused the request for another reason of the caller's (a 4xx other than the
    /// ones above): retrying elsewhere would not help.
    #[error("keysafe refused the request: {0}")]
    Rejected(String),
    #[error("key store unavailable: {0}")]
    Unavailable(String),
}

/// A shared blob as listed: its slot and when it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedEntry {
    pub slot: String,
    /// Epoch milliseconds of the last write.
    pub updated_ms: i64,
}

/// A shared blob and the version it was read at (for compare-and-set).
#[derive(Clone)]
pub struct SharedBlob {
    pub data: Zeroizing<Vec<u8>>,
    pub version: u64,
}

/// The gateway's storage. Every gateway of an organisation sees the same backend, so all
/// consistency between gateways rests on these compare-and-set operations.
#[async_trait]
pub trait KeyBackend: Send + Sync + 'static {
    /// Stores version 0 of a new key; `AlreadyExists` if the name is taken.
    async fn create(&self, rec: &KeyVersionRecord) -> Result<(), BackendError>;
    /// The newest version, or None.
    async fn current(&self, name: &str) -> Result<Option<KeyVersionRecord>, BackendError>;
    /// Version `n`, or None.
    async fn version(&self, name: &str, n: u32) -> Result<Option<KeyVersionRecord>, BackendError>;
    /// Appends `rec` (version `rec.version`) only if the current version is `rec.version - 1`:
    /// `Conflict` otherwise, `NotFound` if the key is gone.
    async fn roll(&self, rec: &KeyVersionRecord) -> Result<(), BackendError>;
    /// Destroys the key and all its versions so the name can be re-created. `NotFound` if absent.
    async fn delete(&self, name: &str) -> Result<(), BackendError>;
    /// All key names, sorted.
    async fn names(&self) -> Result<Vec<String>, BackendError>;
    /// A gateway-shared blob (cookie secret, token secret, token state).
    async fn shared(&self, slot: &str) -> Result<Option<SharedBlob>, BackendError>;
    /// Writes a shared blob: `expected` None = only if absent, Some(v) = only if still at v.
    /// `Conflict` if the precondition fails. Returns the new version.
    async fn put_shared(
        &self,
        slot: &str,
        data: &[u8],
        expected: Option<u64>,
    ) -> Result<u64, BackendError>;
    /// Whether the store answers (for `/health`).
    async fn ping(&self) -> Result<(), BackendError>;
    /// Every shared blob whose slot starts with `prefix`.
    async fn list_shared(&self, prefix: &str) -> Result<Vec<SharedEntry>, BackendError>;
    /// Destroys a shared blob and all its versions. `NotFound` if absent.
    async fn remove_shared(&self, slot: &str) -> Result<(), BackendError>;
}

/// In-memory backend. **For pure unit tests only**: it is what makes the cache and queue logic
/// testable without a server; integration tests use a real keysafe server.
#[derive(Default)]
pub struct MemoryBackend {
    keys: std::sync::Mutex<BTreeMap<String, Vec<KeyVersionRecord>>>,
    shared: std::sync::Mutex<BTreeMap<String, (SharedBlob, i64)>>,
}

impl MemoryBackend {
    /// The shared slots present (for unit tests of what the gateway stores).
    pub fn shared_slots(&self) -> Vec<String> {
        lock(&self.shared).keys().cloned().collect()
    }
    /// The size of a shared blob's current version (for unit tests).
    pub fn shared_len(&self, slot: &str) -> usize {
        lock(&self.shared)
            .get(slot)
            .map_or(0, |(b, _)| b.data.len())
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl KeyBackend for MemoryBackend {
    async fn create(&self, rec: &KeyVersionRecord) -> Result<(), BackendError> {
        let mut k = lock(&self.keys);
        if k.contains_key(&rec.name) {
            return Err(BackendError::AlreadyExists);
        }
        k.insert(rec.name.clone(), vec![rec.clone()]);
        Ok(())
    }
    async fn current(&self, name: &str) -> Result<Option<KeyVersionRecord>, BackendError> {
        Ok(lock(&self.keys).get(name).and_then(|v| v.last().cloned()))
    }
    async fn version(&self, name: &str, n: u32) -> Result<Option<KeyVersionRecord>, BackendError> {
        Ok(lock(&self.keys)
            .get(name)
            .and_then(|v| v.get(n as usize).cloned()))
    }
    async fn roll(&self, rec: &KeyVersionRecord) -> Result<(), BackendError> {
        let mut k = lock(&self.keys);
        let v = k.get_mut(&rec.name).ok_or(BackendError::NotFound)?;
        if v.len() != rec.version as usize {
            return Err(BackendError::Conflict);
        }
        v.push(rec.clone());
        Ok(())
    }
    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        lock(&self.keys)
            .remove(name)
            .map(|_| ())
            .ok_or(BackendError::NotFound)
    }
    async fn names(&self) -> Result<Vec<String>, BackendError> {
        Ok(lock(&self.keys).keys().cloned().collect())
    }
    async fn shared(&self, slot: &str) -> Result<Option<SharedBlob>, BackendError> {
        Ok(lock(&self.shared).get(slot).map(|(b, _)| b.clone()))
    }
    async fn put_shared(
        &self,
        slot: &str,
        data: &[u8],
        expected: Option<u64>,
    ) -> Result<u64, BackendError> {
        let mut s = lock(&self.shared);
        let cur = s.get(slot).map(|(b, _)| b.version);
        if cur != expected {
            return Err(BackendError::Conflict);
        }
        let v = cur.unwrap_or(0) + 1;
        s.insert(
            slot.to_owned(),
            (
                SharedBlob {
                    data: Zeroizing::new(data.to_vec()),
                    version: v,
                },
                crate::auth::now_ms(),
            ),
        );
        Ok(v)
    }
    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
    async fn list_shared(&self, prefix: &str) -> Result<Vec<SharedEntry>, BackendError> {
        Ok(lock(&self.shared)
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (_, at))| SharedEntry {
                slot: k.clone(),
                updated_ms: *at,
            })
            .collect())
    }
    async fn remove_shared(&self, slot: &str) -> Result<(), BackendError> {
        lock(&self.shared)
            .remove(slot)
            .map(|_| ())
            .ok_or(BackendError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names() {
        assert_eq!(split_version_name("k@3"), Some(("k", 3)));
        assert_eq!(split_version_name("a@b@0"), Some(("a@b", 0)));
        assert_eq!(split_version_name("k"), None);
        assert_eq!(split_version_name("k@x"), None);
        assert_eq!(version_name("k", 0), "k@0");
    }
}
