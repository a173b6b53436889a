//! [`KeyBackend`] over keysafe deposits — the only module that knows how the gateway's data sits
//! in keysafe (deposit names, payload format, ownership, encryption).
//!
//! Layout (all deposits owned by the gateway's own keysafe client, for now):
//! * `kms/keys/<encoded name>`: one deposit per Hadoop key; keysafe version `n + 1` holds Hadoop
//!   version `name@n` as JSON `{"name","version","material","meta"}`. Rollover is a put with
//!   `If-Match: <n + 1>`, so two gateways rolling at once never fork a key: one wins, the other
//!   re-reads and appends after it. Delete is delete + purge, so the name can be re-created.
//! * `kms/shared/<slot>`: blobs shared by all gateways (cookie-signing secret, delegation-token
//!   master key, token state), created with `If-None-Match: *` and updated with `If-Match`.
//!
//! Switching to group-owned deposits encrypted to a group's age recipient changes only
//! [`DepositBackend::seal`] / [`DepositBackend::open`] and the client calls below.

use crate::backend::{BackendError, KeyBackend, KeyMeta, KeyVersionRecord, SharedBlob};
use crate::crypto::{b64_in, b64_out};
use async_trait::async_trait;
use keysafe_client::client::Precondition;
use keysafe_client::{ClientError, KeysafeClient};
use keysafe_proto::api::ListQuery;
use keysafe_proto::{DepositName, DepositVersion, ErrorCode};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const KEY_PREFIX: &str = "kms/keys/";
const SHARED_PREFIX: &str = "kms/shared/";

/// Encodes a Hadoop key name into a deposit-name segment: `A-Z a-z 0-9 _ -` stay, every other
/// byte of the UTF-8 form becomes `.xx` (lower-case hex). Reversible, and never `.` or `..`.
pub fn encode_key_name(name: &str) -> Result<DepositName, BackendError> {
    let mut s = String::with_capacity(KEY_PREFIX.len() + name.len());
    s.push_str(KEY_PREFIX);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!(".{b:02x}"));
        }
    }
    DepositName::parse(&s).map_err(|_| {
        BackendError::InvalidName(format!(
            "key name too long: at most {} bytes once encoded",
            DepositName::MAX_LEN - KEY_PREFIX.len()
        ))
    })
}

/// The inverse of [`encode_key_name`]; None for deposits that are not Hadoop keys.
pub fn decode_key_name(deposit: &str) -> Option<String> {
    let enc = deposit.strip_prefix(KEY_PREFIX)?;
    let mut out = Vec::with_capacity(enc.len());
    let b = enc.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'.' {
            let h = enc.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else if b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-' {
            out.push(b[i]);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Serialize, Deserialize)]
struct Payload {
    name: String,
    version: u32,
    material: String,
    meta: KeyMeta,
}

pub struct DepositBackend {
    client: KeysafeClient,
}

impl DepositBackend {
    pub fn new(client: KeysafeClient) -> Self {
        Self { client }
    }

    /// Plaintext → what is stored. Identity today (the payload is protected by keysafe's own
    /// envelope encryption); becomes age encryption to the group's recipient.
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, BackendError> {
        Ok(plain.to_vec())
    }

    /// What is stored → plaintext.
    fn open(&self, stored: &[u8]) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        Ok(Zeroizing::new(stored.to_vec()))
    }

    fn encode(&self, rec: &KeyVersionRecord) -> Result<Vec<u8>, BackendError> {
        let p = Zeroizing::new(Payload {
            name: rec.name.clone(),
            version: rec.version,
            material: b64_out(&rec.material),
            meta: rec.meta.clone(),
        });
        let json = Zeroizing::new(
            serde_json::to_vec(&*p).map_err(|e| BackendError::Unavailable(e.to_string()))?,
        );
        self.seal(&json)
    }

    fn decode(&self, stored: &[u8]) -> Result<KeyVersionRecord, BackendError> {
        let plain = self.open(stored)?;
        let p: Payload = serde_json::from_slice(&plain)
            .map_err(|_| BackendError::Unavailable("stored key record is malformed".into()))?;
        let p = Zeroizing::new(p);
        let material = b64_in(&p.material)
            .map_err(|_| BackendError::Unavailable("stored key record is malformed".into()))?;
        Ok(KeyVersionRecord {
            name: p.name.clone(),
            version: p.version,
            material,
            meta: p.meta.clone(),
        })
    }

    /// Every read of the gateway goes through here, and must reach a server: rollovers and the
    /// shared token state are compare-and-set on what was read, and the gateway keeps its own
    /// caches with Hadoop's timeouts, so the client library's local cache is bypassed.
    async fn read(
        &self,
        dn: &DepositName,
        v: Option<DepositVersion>,
    ) -> Result<keysafe_client::client::Fetched, ClientError> {
        self.client
            .get_with(dn, v, keysafe_client::CacheUse::Refresh)
            .await
    }

    async fn fetch(
        &self,
        dn: &DepositName,
        v: Option<DepositVersion>,
    ) -> Result<Option<KeyVersionRecord>, BackendError> {
        match self.read(dn, v).await {
            Ok(f) => self.decode(&f.payload).map(Some),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(map(e)),
        }
    }

    fn shared_name(slot: &str) -> Result<DepositName, BackendError> {
        DepositName::parse(&format!("{SHARED_PREFIX}{slot}"))
            .map_err(|e| BackendError::InvalidName(e.message().to_owned()))
    }
}

impl Zeroize for Payload {
    fn zeroize(&mut self) {
        self.material.zeroize();
    }
}
use zeroize::Zeroize;

fn is_absent(e: &ClientError) -> bool {
    matches!(e.code(), Some(ErrorCode::NotFound | ErrorCode::Deleted))
}

fn map(e: ClientError) -> BackendError {
    match e.code() {
        Some(ErrorCode::NotFound | ErrorCode::Deleted) => BackendError::NotFound,
        Some(ErrorCode::VersionConflict) => BackendError::Conflict,
        Some(ErrorCode::AlreadyExists) => BackendError::AlreadyExists,
        _ => BackendError::Unavailable(e.to_string()),
    }
}

#[async_trait]
impl KeyBackend for DepositBackend {
    async fn create(&self, rec: &KeyVersionRecord) -> Result<(), BackendError> {
        let dn = encode_key_name(&rec.name)?;
        let body = self.encode(rec)?;
        for attempt in 0..2 {
            match self
                .client
                .put(&dn, body.clone(), Precondition::IfAbsent)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some(ErrorCode::VersionConflict) => {
                    return Err(BackendError::AlreadyExists);
                }
                // A delete that stopped between soft delete and purge: finish it, then create.
                Err(e) if e.code() == Some(ErrorCode::Deleted) && attempt == 0 => {
                    let _ = self.client.purge(&dn).await;
                }
                Err(e) => return Err(map(e)),
            }
        }
        Err(BackendError::AlreadyExists)
    }

    async fn current(&self, name: &str) -> Result<Option<KeyVersionRecord>, BackendError> {
        let dn = encode_key_name(name)?;
        self.fetch(&dn, None).await
    }

    async fn version(&self, name: &str, n: u32) -> Result<Option<KeyVersionRecord>, BackendError> {
        let dn = encode_key_name(name)?;
        let v = DepositVersion::new(u64::from(n) + 1)
            .map_err(|e| BackendError::InvalidName(e.message().to_owned()))?;
        match self.read(&dn, Some(v)).await {
            Ok(f) => self.decode(&f.payload).map(Some),
            Err(e) if is_absent(&e) => Ok(None),
            // An out-of-range version of an existing deposit.
            Err(e) if e.code() == Some(ErrorCode::BadRequest) => Ok(None),
            Err(e) => Err(map(e)),
        }
    }

    async fn roll(&self, rec: &KeyVersionRecord) -> Result<(), BackendError> {
        let dn = encode_key_name(&rec.name)?;
        let expected =
            DepositVersion::new(u64::from(rec.version)).map_err(|_| BackendError::Conflict)?;
        let body = self.encode(rec)?;
        self.client
            .put(&dn, body, Precondition::IfMatch(expected))
            .await
            .map(|_| ())
            .map_err(map)
    }

    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        let dn = encode_key_name(name)?;
        match self.client.delete(&dn).await {
            Ok(_) => {}
            // Already soft-deleted by an interrupted delete: purge below.
            Err(e) if e.code() == Some(ErrorCode::Deleted) => {}
            Err(e) => return Err(map(e)),
        }
        self.client.purge(&dn).await.map(|_| ()).map_err(map)
    }

    async fn names(&self) -> Result<Vec<String>, BackendError> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let l = self
                .client
                .list(&ListQuery {
                    prefix: Some(KEY_PREFIX.to_owned()),
                    limit: Some(ListQuery::MAX_LIMIT),
                    page_token: page.take(),
                    deleted: None,
                    owner: None,
                })
                .await
                .map_err(map)?;
            out.extend(
                l.deposits
                    .iter()
                    .filter(|d| !d.deleted)
                    .filter_map(|d| decode_key_name(d.name.as_str())),
            );
            match l.next_page_token {
                Some(t) => page = Some(t),
                None => break,
            }
        }
        out.sort();
        Ok(out)
    }

    async fn shared(&self, slot: &str) -> Result<Option<SharedBlob>, BackendError> {
        let dn = Self::shared_name(slot)?;
        match self.read(&dn, None).await {
            Ok(f) => Ok(Some(SharedBlob {
                data: self.open(&f.payload)?,
                version: f.version.get(),
            })),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(map(e)),
        }
    }

    async fn put_shared(
        &self,
        slot: &str,
        data: &[u8],
        expected: Option<u64>,
    ) -> Result<u64, BackendError> {
        let dn = Self::shared_name(slot)?;
        let pre = match expected {
            None => Precondition::IfAbsent,
            Some(v) => {
                Precondition::IfMatch(DepositVersion::new(v).map_err(|_| BackendError::Conflict)?)
            }
        };
        let body = self.seal(data)?;
        self.client
            .put(&dn, body, pre)
            .await
            .map(|r| r.version.get())
            .map_err(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_round_trip() {
        for n in [
            "k1",
            "a.b",
            "..",
            ".",
            "sp ace+x",
            "ünï/c@de",
            "UP_low-1",
            "a/b/../c",
        ] {
            let d = encode_key_name(n).unwrap();
            assert!(d.as_str().starts_with(KEY_PREFIX));
            assert_eq!(decode_key_name(d.as_str()).as_deref(), Some(n), "{n}");
        }
        assert_eq!(encode_key_name("a.b").unwrap().as_str(), "kms/keys/a.2eb");
        assert!(encode_key_name(&"x".repeat(248)).is_err());
        assert!(encode_key_name(&"x".repeat(247)).is_ok());
        assert_eq!(decode_key_name("kms/shared/x"), None);
        assert_eq!(decode_key_name("kms/keys/a.zz"), None);
    }
}
