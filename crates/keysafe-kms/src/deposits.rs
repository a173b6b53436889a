//! [`KeyBackend`] over keysafe deposits — the only module that knows how the gateway's data sits
//! in keysafe (deposit names, payload format, ownership, encryption).
//!
//! Every deposit is owned by a keysafe group (`group:kms` by default) and encrypted on the
//! gateway with age to the group's recipient (the client library's [`Vault`]): keysafe stores
//! only ciphertext, and every gateway that is a member of the group can read it, each with its
//! own private key. The first gateway of an organisation creates the group; a later gateway is
//! added by an administrator (`keysafe admin group add-member`) and admitted by any running
//! gateway, which hands it the group identity (`Vault::admit_pending`).
//!
//! Layout:
//! * `kms/keys/<encoded name>`: one deposit per Hadoop key; keysafe version `n + 1` holds Hadoop
//!   version `name@n` as JSON `{"name","version","material","meta"}`. Rollover is a put with
//!   `If-Match: <n + 1>`, so two gateways rolling at once never fork a key: one wins, the other
//!   re-reads and appends after it. Delete is delete + purge, so the name can be re-created.
//! * `kms/shared/<slot>`: blobs shared by all gateways (cookie-signing secret, delegation-token
//!   master key, per-token renewal/cancellation records under `dt/`), created with
//!   `If-None-Match: *` and updated with `If-Match`.
//!
//! Trust in the group: a gateway adopts an existing group only if the group's founding
//! identity (epoch 1), which it unwraps itself, has the recipient its administrator pinned
//! (`[keysafe] group_recipient`), or if this gateway created the group (it records the founding
//! recipient in its client home when it does). A group someone else created under the same
//! name is refused. See docs/adr/0009-kms-gateway-group-pinning.md.

use crate::backend::{
    BackendError, KeyBackend, KeyMeta, KeyVersionRecord, SharedBlob, SharedEntry,
};
use crate::crypto::{b64_in, b64_out};
use async_trait::async_trait;
use base64::Engine;
use keysafe_client::e2e::{AGE_KEY_FILE, Identity};
use keysafe_client::vault::Vault;
use keysafe_client::{CacheUse, ClientError, ClientHome, KeysafeClient, Precondition};
use keysafe_proto::api::ListQuery;
use keysafe_proto::{DepositName, DepositVersion, ErrorCode, GroupName};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use zeroize::{Zeroize, Zeroizing};

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

impl Zeroize for Payload {
    fn zeroize(&mut self) {
        self.material.zeroize();
    }
}

pub struct DepositBackend {
    client: KeysafeClient,
    vault: Arc<Vault>,
    group: GroupName,
    /// `group:<name>`: the owner of every deposit.
    owner: String,
    /// The group's founding recipient (what an administrator pins in other gateways).
    founding_recipient: String,
}

/// The file in the client home where a gateway that created a group records its founding
/// recipient (so that it trusts its own group on restart without a pin).
fn created_marker(home: &ClientHome, group: &GroupName) -> std::path::PathBuf {
    home.dir.join(format!("kms-group-{group}.recipient"))
}

/// The recipient of the group's epoch-1 identity, unwrapped with this gateway's own key (so
/// neither the server nor another member can substitute it).
async fn founding_recipient(
    home: &ClientHome,
    client: &KeysafeClient,
    group: &GroupName,
) -> anyhow::Result<Option<String>> {
    let keys = client.group_keys(group).await?;
    let Some(k) = keys.keys.iter().find(|k| k.epoch == 1) else {
        return Ok(None);
    };
    let me = Identity::read_file(&home.dir.join(AGE_KEY_FILE))?;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(k.wrapped.as_bytes())
        .map_err(|_| anyhow::anyhow!("the group's epoch-1 key is not valid base64"))?;
    let id = keysafe_client::e2e::unwrap_identity(&me, &wrapped)?;
    Ok(Some(id.recipient()))
}

impl DepositBackend {
    /// Opens the gateway's storage as a member of `group`. The first gateway of the
    /// organisation creates the group (with itself as the only member) unless a founding
    /// recipient is pinned (`pin`): then the group must exist and have that recipient. A
    /// gateway that an administrator added waits here until a running gateway has admitted it,
    /// then checks the group against its pin.
    pub async fn open(
        home: &ClientHome,
        client: KeysafeClient,
        group: &str,
        pin: Option<&str>,
    ) -> anyhow::Result<Self> {
        let group = GroupName::parse(group)
            .map_err(|e| anyhow::anyhow!("invalid group name {group:?}: {}", e.message()))?;
        let vault = Vault::from_home(home, client.clone())?;
        let me = client
            .own_fingerprint()
            .ok_or_else(|| anyhow::anyhow!("the gateway's client has no identity"))?;
        let org = client.whoami().await?.org;
        let not_member = || {
            anyhow::anyhow!(
                "this gateway ({me}) is not a member of the keysafe group {group}, which \
                 another gateway created: an administrator adds it with \
                 `keysafe admin group add-member {group} --org {org} {me}`, then a running gateway \
                 admits it \
                 (see docs/kms.md)"
            )
        };
        let marker = created_marker(home, &group);
        let mut told = false;
        let mut created_now: Option<String> = None;
        loop {
            match client.group(&group).await {
                Ok(info) => match info.members.iter().find(|m| m.fingerprint == me) {
                    Some(m) if m.has_current_key => break,
                    Some(_) => {
                        if !told {
                            tracing::warn!(
                                group = %group,
                                "waiting to be admitted: a running gateway of the group hands this one the group key"
                            );
                            told = true;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => return Err(not_member()),
                },
                Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                    if let Some(p) = pin {
                        anyhow::bail!(
                            "the keysafe group {group} does not exist (or this gateway is not a member), \
                             but [keysafe] group_recipient pins it to {p}: a gateway never creates a \
                             pinned group anew. Check the organisation and group name, or remove \
                             group_recipient to create a new group (its keys would be new ones)"
                        );
                    }
                    match vault.create_group(&group, &[]).await {
                        Ok(g) => {
                            write_marker(&marker, &g.recipient)?;
                            tracing::info!(
                                group = %group,
                                group_recipient = %g.recipient,
                                "created the keysafe group for the KMS gateways; pin it in every other \
                                 gateway's configuration: [keysafe] group_recipient = \"{}\"",
                                g.recipient
                            );
                            created_now = Some(g.recipient);
                            break;
                        }
                        // It exists, but only its members see it: this gateway is not one.
                        Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {
                            return Err(not_member());
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let founding = match created_now {
            Some(r) => r,
            None => check_pin(home, &client, &group, pin, &marker).await?,
        };
        Ok(Self {
            client,
            vault: Arc::new(vault),
            owner: format!("group:{group}"),
            group,
            founding_recipient: founding,
        })
    }

    /// The group's founding recipient (the value to pin as `[keysafe] group_recipient`).
    pub fn founding_recipient(&self) -> &str {
        &self.founding_recipient
    }

    /// Admits, every `every`, gateways an administrator added to the group (they wait for it).
    pub fn spawn_admitter(&self, every: Duration) {
        let vault = Arc::downgrade(&self.vault);
        let group = self.group.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(v) = vault.upgrade() else { break };
                match v.admit_pending(&group).await {
                    Ok(done) => {
                        for fp in done {
                            tracing::info!(group = %group, member = %fp, "admitted a gateway to the group");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(group = %group, error = %e, "cannot admit pending gateways")
                    }
                }
            }
        });
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn encode(&self, rec: &KeyVersionRecord) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let p = Zeroizing::new(Payload {
            name: rec.name.clone(),
            version: rec.version,
            material: b64_out(&rec.material),
            meta: rec.meta.clone(),
        });
        serde_json::to_vec(&*p)
            .map(Zeroizing::new)
            .map_err(|e| BackendError::Unavailable(e.to_string()))
    }

    fn decode(&self, plain: &[u8]) -> Result<KeyVersionRecord, BackendError> {
        let p: Payload = serde_json::from_slice(plain)
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

    /// Every read goes through here and reaches a server (never the client's local cache):
    /// rollovers and the token state are compare-and-set on what was read, and the gateway
    /// keeps its own caches with Hadoop's timeouts. Decrypted with the group identity.
    async fn read(
        &self,
        dn: &DepositName,
        v: Option<DepositVersion>,
    ) -> Result<(DepositVersion, Zeroizing<Vec<u8>>), ClientError> {
        let o = self
            .vault
            .get(Some(&self.owner), dn, v, CacheUse::Refresh)
            .await?;
        Ok((o.version, o.plaintext))
    }

    /// Encrypts to the group and writes under a precondition.
    async fn write(
        &self,
        dn: &DepositName,
        plain: &[u8],
        pre: Precondition,
    ) -> Result<DepositVersion, ClientError> {
        self.vault
            .put(Some(&self.owner), dn, plain, pre)
            .await
            .map(|r| r.version)
    }

    async fn fetch(
        &self,
        dn: &DepositName,
        v: Option<DepositVersion>,
    ) -> Result<Option<KeyVersionRecord>, BackendError> {
        match self.read(dn, v).await {
            Ok((_, plain)) => self.decode(&plain).map(Some),
            Err(e) if is_absent(&e) => Ok(None),
            // An out-of-range version of an existing deposit.
            Err(e) if v.is_some() && e.code() == Some(ErrorCode::BadRequest) => Ok(None),
            Err(e) => Err(map(e)),
        }
    }

    fn shared_name(slot: &str) -> Result<DepositName, BackendError> {
        DepositName::parse(&format!("{SHARED_PREFIX}{slot}"))
            .map_err(|e| BackendError::InvalidName(e.message().to_owned()))
    }
}

fn write_marker(path: &std::path::Path, recipient: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("recipient.tmp");
    std::fs::write(&tmp, format!("{recipient}\n"))
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot record the group's founding recipient in {}: {e}",
                path.display()
            )
        })
}

/// Adopts an existing group only if its founding recipient is the pinned one, or the one this
/// gateway recorded when it created the group.
async fn check_pin(
    home: &ClientHome,
    client: &KeysafeClient,
    group: &GroupName,
    pin: Option<&str>,
    marker: &std::path::Path,
) -> anyhow::Result<String> {
    let actual = founding_recipient(home, client, group).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "this gateway holds no key of the keysafe group {group}'s first epoch, so it cannot \
             check who founded the group; a member that holds it must admit this gateway \
             (keysafe group admit {group} FINGERPRINT)"
        )
    })?;
    let recorded = std::fs::read_to_string(marker)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let expected = match (pin, recorded.as_deref()) {
        (Some(p), _) => p.trim().to_owned(),
        (None, Some(r)) => r.to_owned(),
        (None, None) => anyhow::bail!(
            "the keysafe group {group} exists but this gateway did not create it and no \
             [keysafe] group_recipient is pinned in its configuration, so it cannot tell the \
             gateways' group from one another client created under that name. The group's \
             founding recipient is {actual}: if it is the value the first gateway logged when it \
             created the group (or an administrator created the group for the gateways), add \
             `[keysafe]` `group_recipient = \"{actual}\"` to the configuration (see docs/kms.md)"
        ),
    };
    if expected != actual {
        anyhow::bail!(
            "the keysafe group {group} was founded with the recipient {actual}, not the \
             {expected} this gateway trusts ({}): another client may have created a group of \
             that name. Refusing to use it; check the group with an administrator \
             (keysafe admin group show {group} --org ORG) and fix [keysafe] group_recipient \
             or the group name (see docs/kms.md)",
            if pin.is_some() {
                "[keysafe] group_recipient"
            } else {
                "recorded when it created the group"
            }
        );
    }
    Ok(actual)
}

fn is_absent(e: &ClientError) -> bool {
    matches!(e.code(), Some(ErrorCode::NotFound | ErrorCode::Deleted))
}

/// The one place keysafe's answers become backend errors. A refusal of the caller's making (a
/// 4xx) is reported as such, never as an unavailable store: Hadoop's load-balancing client
/// fails over on the latter and would send the same request to every gateway.
fn map(e: ClientError) -> BackendError {
    match e.code() {
        Some(ErrorCode::NotFound | ErrorCode::Deleted) => BackendError::NotFound,
        Some(ErrorCode::VersionConflict) => BackendError::Conflict,
        Some(ErrorCode::AlreadyExists) => BackendError::AlreadyExists,
        Some(ErrorCode::PayloadTooLarge) => BackendError::TooLarge(e.to_string()),
        Some(ErrorCode::BadRequest | ErrorCode::InvalidName) => {
            BackendError::Rejected(e.to_string())
        }
        // Every keysafe node answers the same while its database has no primary (a failover):
        // reads go on, this write can be sent again once the failover is over.
        Some(ErrorCode::ReadOnly) => BackendError::Unavailable(format!(
            "keysafe accepts no writes at the moment (its database is failing over; reads \
             still work): retry in a few seconds ({e})"
        )),
        _ => match e.last() {
            ClientError::Unexpected { status: 413, .. } => BackendError::TooLarge(e.to_string()),
            _ => BackendError::Unavailable(e.to_string()),
        },
    }
}

#[async_trait]
impl KeyBackend for DepositBackend {
    async fn create(&self, rec: &KeyVersionRecord) -> Result<(), BackendError> {
        let dn = encode_key_name(&rec.name)?;
        let body = self.encode(rec)?;
        for attempt in 0..2 {
            match self.write(&dn, &body, Precondition::IfAbsent).await {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some(ErrorCode::VersionConflict) => {
                    return Err(BackendError::AlreadyExists);
                }
                // A delete that stopped between soft delete and purge: finish it, then create.
                Err(e) if e.code() == Some(ErrorCode::Deleted) && attempt == 0 => {
                    let _ = self.client.purge_of(Some(&self.owner), &dn).await;
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
        self.fetch(&dn, Some(v)).await
    }

    async fn roll(&self, rec: &KeyVersionRecord) -> Result<(), BackendError> {
        let dn = encode_key_name(&rec.name)?;
        let expected =
            DepositVersion::new(u64::from(rec.version)).map_err(|_| BackendError::Conflict)?;
        let body = self.encode(rec)?;
        self.write(&dn, &body, Precondition::IfMatch(expected))
            .await
            .map(|_| ())
            .map_err(map)
    }

    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        let dn = encode_key_name(name)?;
        match self.client.delete_of(Some(&self.owner), &dn).await {
            Ok(_) => {}
            // Already soft-deleted by an interrupted delete: purge below.
            Err(e) if e.code() == Some(ErrorCode::Deleted) => {}
            Err(e) => return Err(map(e)),
        }
        self.client
            .purge_of(Some(&self.owner), &dn)
            .await
            .map(|_| ())
            .map_err(map)
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
                    owner: Some(self.owner.clone()),
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
            Ok((v, data)) => Ok(Some(SharedBlob {
                data,
                version: v.get(),
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
        self.write(&dn, data, pre)
            .await
            .map(|v| v.get())
            .map_err(map)
    }

    async fn ping(&self) -> Result<(), BackendError> {
        match self.client.health().await {
            // A read-only keysafe (its database failing over) still serves every key read.
            Ok(h) if h.status == "ok" || h.status == "read_only" => Ok(()),
            Ok(h) => Err(BackendError::Unavailable(format!(
                "keysafe is {}",
                h.status
            ))),
            Err(e) => Err(BackendError::Unavailable(e.to_string())),
        }
    }

    async fn list_shared(&self, prefix: &str) -> Result<Vec<SharedEntry>, BackendError> {
        let full = format!("{SHARED_PREFIX}{prefix}");
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let l = self
                .client
                .list(&ListQuery {
                    prefix: Some(full.clone()),
                    limit: Some(ListQuery::MAX_LIMIT),
                    page_token: page.take(),
                    deleted: None,
                    owner: Some(self.owner.clone()),
                })
                .await
                .map_err(map)?;
            out.extend(l.deposits.iter().filter(|d| !d.deleted).filter_map(|d| {
                d.name
                    .as_str()
                    .strip_prefix(SHARED_PREFIX)
                    .map(|slot| SharedEntry {
                        slot: slot.to_owned(),
                        updated_ms: d.updated_at.unix_millis(),
                    })
            }));
            match l.next_page_token {
                Some(t) => page = Some(t),
                None => break,
            }
        }
        Ok(out)
    }

    async fn remove_shared(&self, slot: &str) -> Result<(), BackendError> {
        let dn = Self::shared_name(slot)?;
        match self.client.delete_of(Some(&self.owner), &dn).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::Deleted) => {}
            Err(e) => return Err(map(e)),
        }
        self.client
            .purge_of(Some(&self.owner), &dn)
            .await
            .map(|_| ())
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
