//! Delegation tokens (`kms-dt`), as Hadoop's `AbstractDelegationTokenSecretManager` makes them
//! (Writable identifier, HMAC-SHA1 password under a master key shared by all gateways), with
//! state that stays small however many tokens are issued:
//!
//! * Issuing writes nothing: a token is valid from its own signed identifier (issue date, max
//!   date) until `issue date + renew interval`. So 100,000 tokens a day cost no storage.
//! * Renewing or cancelling writes one small record for that token (`kms/shared/dt/<hash>`,
//!   a new deposit version each time: renewals of one token are bounded by max-lifetime /
//!   renew-interval). A record is needed only until the token's current expiry, after which
//!   every gateway refuses the token anyway, so records older than one renew interval are
//!   pruned (delete + purge) by a background sweep.
//! * Who may get tokens is an ACL; how many one caller gets per hour from a gateway is capped.
//!
//! Tokens issued before this scheme (by gateways that kept every live token in one
//! `kms/shared/dt-state` deposit) are judged by that frozen list: a token it no longer holds
//! (cancelled or expired) stays refused. The list is deleted once none of its tokens can live.

use crate::acl::Acl;
use crate::auth::{now_ms, shared_secret};
use crate::backend::{BackendError, KeyBackend};
use crate::config::DtConfig;
use crate::crypto::{ct_eq, hmac_sha1, random_bytes};
use crate::error::{JavaClass, KmsError, KmsResult};
use crate::kms::backend_err;
use crate::token::{KIND, Token, TokenIdent};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SLOT_DT_KEY: &str = "dt-master-key";
/// The single token-state deposit of earlier gateways (read once, never written).
const SLOT_LEGACY_STATE: &str = "dt-state";
/// Token records live under `kms/shared/dt/`.
const RECORD_PREFIX: &str = "dt/";
/// How long a token record read from keysafe is trusted (renewals and cancellations made
/// through another gateway take at most this long to be seen here).
const RECORD_TTL: Duration = Duration::from_secs(5);
/// Beyond this many cached records, expired ones are swept (then all, if still too many).
const MAX_CACHED_RECORDS: usize = 100_000;
const MASTER_KEY_ID: i32 = 1;
const HOUR_MS: i64 = 3_600_000;

/// What a renewal or cancellation left behind for one token.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct TokenRecord {
    /// The token's current expiry (epoch ms).
    renew: i64,
    cancelled: bool,
}

/// The identity a verified delegation token carries.
#[derive(Debug, Clone)]
pub struct TokenUser {
    pub owner: String,
    pub real_user: Option<String>,
}

/// A token of the legacy state list: its current expiry and owner.
#[derive(Debug, Clone, Deserialize)]
struct LegacyEntry {
    owner: String,
    renew: i64,
}

#[derive(Debug, Default, Deserialize)]
struct LegacyState {
    #[serde(default)]
    tokens: HashMap<i32, LegacyEntry>,
}

/// Tokens issued before `cutoff` (epoch ms) must be in `tokens` unless a new-style record
/// speaks for them.
struct Legacy {
    cutoff: i64,
    tokens: HashMap<i32, LegacyEntry>,
}

struct IssueCounts {
    hour: i64,
    per_user: HashMap<String, u32>,
}

/// The delegation-token secret manager shared by all gateways through the backend.
pub struct DtManager {
    backend: Arc<dyn KeyBackend>,
    master: Zeroizing<Vec<u8>>,
    cfg: DtConfig,
    acl: Acl,
    records: Mutex<HashMap<String, (Instant, Option<TokenRecord>)>>,
    issued: Mutex<IssueCounts>,
    legacy: Option<Legacy>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn forbidden(m: impl Into<String>) -> KmsError {
    KmsError::new(JavaClass::Authorization, m).with_status(StatusCode::FORBIDDEN)
}

/// The record slot of a token: a hash of its identifier (which the master key signs).
fn record_slot(identifier: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, identifier);
    format!("{RECORD_PREFIX}{}", hex::encode(&d.as_ref()[..16]))
}

impl DtManager {
    pub async fn shared(backend: Arc<dyn KeyBackend>, cfg: DtConfig) -> KmsResult<Self> {
        let master = shared_secret(&*backend, SLOT_DT_KEY, 64).await?;
        let legacy = match backend
            .shared(SLOT_LEGACY_STATE)
            .await
            .map_err(backend_err)?
        {
            None => None,
            Some(b) => {
                let s: LegacyState = serde_json::from_slice(&b.data)
                    .map_err(|_| KmsError::io("the legacy delegation-token state is malformed"))?;
                Some(Legacy {
                    cutoff: now_ms(),
                    tokens: s.tokens,
                })
            }
        };
        Ok(Self {
            backend,
            master,
            legacy,
            acl: Acl::parse(&cfg.acl),
            cfg,
            records: Mutex::new(HashMap::new()),
            issued: Mutex::new(IssueCounts {
                hour: 0,
                per_user: HashMap::new(),
            }),
        })
    }

    fn password(&self, ident: &[u8]) -> Vec<u8> {
        hmac_sha1(&self.master, ident)
    }

    fn renew_ms(&self) -> i64 {
        self.cfg.renew_interval.as_millis() as i64
    }

    /// Counts one token for `caller` in the current hour; false if over the cap.
    fn take_quota(&self, caller: &str, now: i64) -> bool {
        let mut c = lock(&self.issued);
        let hour = now.div_euclid(HOUR_MS);
        if c.hour != hour {
            c.hour = hour;
            c.per_user.clear();
        }
        let n = c.per_user.entry(caller.to_owned()).or_insert(0);
        if *n >= self.cfg.max_per_user_per_hour {
            return false;
        }
        *n += 1;
        true
    }

    /// GETDELEGATIONTOKEN for `owner` (the effective user, checked against the token ACL with
    /// `groups`), asked by the authenticated `caller` (counted against the hourly cap). Writes
    /// nothing to keysafe.
    pub async fn issue(
        &self,
        owner: &str,
        groups: &[String],
        renewer: &str,
        real_user: Option<&str>,
        caller: &str,
    ) -> KmsResult<String> {
        if !self.acl.allows(owner, groups) {
            return Err(KmsError::authz(format!(
                "User:{owner} not allowed to do 'GET_DELEGATION_TOKEN'"
            )));
        }
        let now = now_ms();
        if !self.take_quota(caller, now) {
            return Err(KmsError::authz(format!(
                "User:{caller} got {} delegation tokens from this gateway in the last hour, the most allowed \
                 (delegation_token.max_per_user_per_hour)",
                self.cfg.max_per_user_per_hour
            ))
            .with_status(StatusCode::TOO_MANY_REQUESTS));
        }
        let max = now + self.cfg.max_lifetime.as_millis() as i64;
        let seq_bytes = random_bytes(4)?;
        let seq =
            i32::from_be_bytes([seq_bytes[0], seq_bytes[1], seq_bytes[2], seq_bytes[3]]) & i32::MAX;
        let ident = TokenIdent {
            owner: owner.to_owned(),
            renewer: renewer.to_owned(),
            real_user: real_user.unwrap_or("").to_owned(),
            issue_date: now,
            max_date: max,
            sequence: seq,
            master_key_id: MASTER_KEY_ID,
        }
        .encode();
        Ok(Token {
            password: self.password(&ident),
            identifier: ident,
            kind: KIND.to_owned(),
            service: String::new(),
        }
        .encode_url_string())
    }

    /// Decodes and checks the signature (not expiry or cancellation); the identifier bytes too.
    fn authentic(&self, url_string: &str) -> Option<(TokenIdent, Vec<u8>)> {
        let t = Token::decode_url_string(url_string)?;
        if t.kind != KIND || !ct_eq(&self.password(&t.identifier), &t.password) {
            return None;
        }
        let id = TokenIdent::decode(&t.identifier)?;
        (id.master_key_id == MASTER_KEY_ID).then_some((id, t.identifier))
    }

    /// The expiry a token has without any record: its issue date plus the renew interval, or
    /// for a token issued before this scheme what the legacy list says (0: not there, so
    /// cancelled or expired).
    fn implied_expiry(&self, id: &TokenIdent) -> i64 {
        if let Some(l) = &self.legacy
            && id.issue_date < l.cutoff
        {
            return l
                .tokens
                .get(&id.sequence)
                .filter(|e| e.owner == id.owner)
                .map_or(0, |e| e.renew.min(id.max_date));
        }
        id.issue_date
            .saturating_add(self.renew_ms())
            .min(id.max_date)
    }

    /// The token's record, from the cache within [`RECORD_TTL`] or from keysafe.
    async fn record(&self, slot: &str) -> KmsResult<Option<TokenRecord>> {
        if let Some((at, r)) = lock(&self.records).get(slot)
            && at.elapsed() < RECORD_TTL
        {
            return Ok(*r);
        }
        let (r, _) = self.read_record(slot).await?;
        self.remember(slot, r);
        Ok(r)
    }

    fn remember(&self, slot: &str, r: Option<TokenRecord>) {
        let mut m = lock(&self.records);
        if m.len() >= MAX_CACHED_RECORDS {
            m.retain(|_, (at, _)| at.elapsed() < RECORD_TTL);
            if m.len() >= MAX_CACHED_RECORDS {
                m.clear();
            }
        }
        m.insert(slot.to_owned(), (Instant::now(), r));
    }

    async fn read_record(&self, slot: &str) -> KmsResult<(Option<TokenRecord>, Option<u64>)> {
        match self.backend.shared(slot).await.map_err(backend_err)? {
            None => Ok((None, None)),
            Some(b) => {
                let r: TokenRecord = serde_json::from_slice(&b.data)
                    .map_err(|_| KmsError::io("a delegation-token record is malformed"))?;
                Ok((Some(r), Some(b.version)))
            }
        }
    }

    /// Authenticates a request by token: signature, expiry, and not cancelled.
    pub async fn verify(&self, url_string: &str) -> KmsResult<TokenUser> {
        let invalid = || KmsError::authn("Invalid delegation token");
        let (id, ident) = self.authentic(url_string).ok_or_else(invalid)?;
        let now = now_ms();
        if id.max_date <= now {
            return Err(KmsError::authn("Delegation token has expired"));
        }
        let rec = self.record(&record_slot(&ident)).await?;
        if rec.is_some_and(|r| r.cancelled) {
            return Err(invalid());
        }
        let expiry = rec.map_or_else(|| self.implied_expiry(&id), |r| r.renew);
        if expiry <= now {
            return Err(KmsError::authn("Delegation token has expired"));
        }
        Ok(TokenUser {
            owner: id.owner,
            real_user: Some(id.real_user).filter(|r| !r.is_empty()),
        })
    }

    /// Read-modify-write of one token's record with compare-and-set, retried when another
    /// gateway wrote first. `f` gets the current record and returns the new one.
    async fn update(
        &self,
        slot: &str,
        f: impl Fn(Option<TokenRecord>) -> KmsResult<TokenRecord>,
    ) -> KmsResult<TokenRecord> {
        for _ in 0..8 {
            let (cur, version) = self.read_record(slot).await?;
            let next = f(cur)?;
            let data = serde_json::to_vec(&next).map_err(|e| KmsError::io(e.to_string()))?;
            match self.backend.put_shared(slot, &data, version).await {
                Ok(_) => {
                    self.remember(slot, Some(next));
                    return Ok(next);
                }
                Err(BackendError::Conflict) => continue,
                Err(e) => return Err(backend_err(e)),
            }
        }
        Err(KmsError::io(
            "delegation-token record is too busy, try again",
        ))
    }

    /// RENEWDELEGATIONTOKEN: only the token's renewer may, and only before it expires; returns
    /// the new expiry.
    pub async fn renew(&self, url_string: &str, caller: &str) -> KmsResult<i64> {
        let (id, ident) = self
            .authentic(url_string)
            .ok_or_else(|| forbidden("Invalid delegation token"))?;
        if id.renewer.is_empty() || id.renewer != caller {
            return Err(forbidden(format!(
                "Client {caller} tries to renew a token with renewer {}",
                id.renewer
            )));
        }
        let now = now_ms();
        if id.max_date <= now {
            return Err(forbidden("Delegation token has expired"));
        }
        let implied = self.implied_expiry(&id);
        let interval = self.renew_ms();
        let rec = self
            .update(&record_slot(&ident), |cur| {
                let expiry = cur.map_or(implied, |r| r.renew);
                if cur.is_some_and(|r| r.cancelled) || expiry <= now {
                    return Err(forbidden("Renewal request for unknown token"));
                }
                Ok(TokenRecord {
                    renew: now.saturating_add(interval).min(id.max_date),
                    cancelled: false,
                })
            })
            .await?;
        Ok(rec.renew)
    }

    /// CANCELDELEGATIONTOKEN: the owner or the renewer (or anyone holding it, when the caller is
    /// not authenticated: the canceller is then the token's owner, as in Hadoop).
    pub async fn cancel(&self, url_string: &str, caller: Option<&str>) -> KmsResult<()> {
        let not_found = || {
            KmsError::io("Invalid delegation token, cannot cancel")
                .with_status(StatusCode::NOT_FOUND)
        };
        let (id, ident) = self.authentic(url_string).ok_or_else(not_found)?;
        let canceller = caller.unwrap_or(&id.owner);
        if canceller != id.owner && canceller != id.renewer {
            return Err(KmsError::authz(format!(
                "{canceller} is not authorized to cancel the token"
            )));
        }
        let now = now_ms();
        let implied = self.implied_expiry(&id);
        self.update(&record_slot(&ident), |cur| {
            let expiry = cur.map_or(implied, |r| r.renew);
            if cur.is_some_and(|r| r.cancelled) || expiry <= now || id.max_date <= now {
                return Err(not_found());
            }
            Ok(TokenRecord {
                renew: expiry,
                cancelled: true,
            })
        })
        .await?;
        Ok(())
    }

    /// Deletes the records no token can need any more (last written more than one renew
    /// interval ago); returns how many.
    pub async fn prune(&self) -> KmsResult<usize> {
        let now = now_ms();
        if let Some(l) = &self.legacy
            && now
                > l.cutoff
                    .saturating_add(self.cfg.max_lifetime.as_millis() as i64)
        {
            match self.backend.remove_shared(SLOT_LEGACY_STATE).await {
                Ok(()) | Err(BackendError::NotFound) => {}
                Err(e) => return Err(backend_err(e)),
            }
        }
        let cutoff = now.saturating_sub(self.renew_ms());
        let entries = self
            .backend
            .list_shared(RECORD_PREFIX)
            .await
            .map_err(backend_err)?;
        let mut n = 0;
        for e in entries.iter().filter(|e| e.updated_ms < cutoff) {
            match self.backend.remove_shared(&e.slot).await {
                Ok(()) | Err(BackendError::NotFound) => n += 1,
                Err(err) => return Err(backend_err(err)),
            }
        }
        Ok(n)
    }

    /// Prunes every `every` until the manager is dropped.
    pub fn spawn_pruner(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(m) = weak.upgrade() else { break };
                match m.prune().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(records = n, "pruned expired delegation-token records"),
                    Err(e) => {
                        tracing::warn!(error = %e.message, "cannot prune delegation-token records")
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    async fn mgr(backend: Arc<dyn KeyBackend>, cfg: DtConfig) -> DtManager {
        DtManager::shared(backend, cfg).await.unwrap()
    }

    #[tokio::test]
    async fn tokens_issue_verify_renew_cancel() {
        let backend: Arc<dyn KeyBackend> = Arc::new(MemoryBackend::default());
        let a = mgr(backend.clone(), DtConfig::default()).await;
        let b = mgr(backend.clone(), DtConfig::default()).await;
        let t = a.issue("alice", &[], "yarn", None, "alice").await.unwrap();
        // Another manager over the same backend honours it (shared master key).
        assert_eq!(b.verify(&t).await.unwrap().owner, "alice");
        assert!(
            b.renew(&t, "alice").await.is_err(),
            "only the renewer renews"
        );
        assert!(b.renew(&t, "yarn").await.unwrap() > now_ms());
        assert!(a.cancel(&t, Some("mallory")).await.is_err());
        b.cancel(&t, None).await.unwrap();
        assert!(b.verify(&t).await.is_err(), "cancelled");
        // A fresh gateway (no cache) sees the cancellation at once.
        let c2 = mgr(backend.clone(), DtConfig::default()).await;
        assert!(c2.verify(&t).await.is_err());
        assert!(
            c2.renew(&t, "yarn").await.is_err(),
            "a cancelled token is not renewed"
        );
        assert_eq!(
            a.cancel(&t, None).await.unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
        // A forged token (right format, wrong key) is refused.
        let other: Arc<dyn KeyBackend> = Arc::new(MemoryBackend::default());
        let c = mgr(other, DtConfig::default()).await;
        let forged = c.issue("admin", &[], "yarn", None, "x").await.unwrap();
        assert!(a.verify(&forged).await.is_err());
        assert!(a.verify("nonsense").await.is_err());
    }

    /// Issuing writes nothing; renewing and cancelling write one record each, constant-size
    /// whatever else exists, and the sweep removes records nobody can need.
    #[tokio::test]
    async fn state_is_constant_size_and_pruned() {
        let backend = Arc::new(MemoryBackend::default());
        let dynb: Arc<dyn KeyBackend> = backend.clone();
        let cfg = DtConfig {
            max_per_user_per_hour: u32::MAX,
            ..DtConfig::default()
        };
        let m = mgr(dynb.clone(), cfg).await;
        let before = backend.shared_slots();
        let mut toks = vec![];
        for i in 0..2000 {
            toks.push(
                m.issue(&format!("u{i}"), &[], "yarn", None, "x")
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(backend.shared_slots(), before, "issuing wrote nothing");
        m.renew(&toks[0], "yarn").await.unwrap();
        m.cancel(&toks[1], None).await.unwrap();
        let after = backend.shared_slots();
        assert_eq!(after.len(), before.len() + 2);
        let sizes: Vec<usize> = after
            .iter()
            .filter(|s| s.starts_with(RECORD_PREFIX))
            .map(|s| backend.shared_len(s))
            .collect();
        assert!(sizes.iter().all(|n| *n < 64), "{sizes:?}");
        // Nothing is old enough to prune yet ...
        assert_eq!(m.prune().await.unwrap(), 0);
        // ... with a zero renew interval (every record is past), both go.
        let eager = mgr(
            dynb,
            DtConfig {
                renew_interval: Duration::ZERO,
                ..DtConfig::default()
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(eager.prune().await.unwrap(), 2);
        assert_eq!(backend.shared_slots(), before);
    }

    #[tokio::test]
    async fn acl_and_hourly_cap() {
        let backend: Arc<dyn KeyBackend> = Arc::new(MemoryBackend::default());
        let m = mgr(
            backend,
            DtConfig {
                acl: "oozie analysts".into(),
                max_per_user_per_hour: 2,
                ..DtConfig::default()
            },
        )
        .await;
        let e = m
            .issue("mallory", &[], "yarn", None, "mallory")
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(
            m.issue("carol", &["analysts".into()], "yarn", None, "carol")
                .await
                .is_ok(),
            "by group"
        );
        assert!(m.issue("oozie", &[], "yarn", None, "oozie").await.is_ok());
        assert!(m.issue("oozie", &[], "yarn", None, "oozie").await.is_ok());
        let e = m
            .issue("oozie", &[], "yarn", None, "oozie")
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(e.message.contains("max_per_user_per_hour"), "{}", e.message);
        // The cap is per caller: carol still has hers.
        assert!(
            m.issue("carol", &["analysts".into()], "yarn", None, "carol")
                .await
                .is_ok()
        );
    }

    /// Tokens of the earlier single-deposit state: one it still lists is honoured until its
    /// listed expiry; one it dropped (cancelled) stays refused.
    #[tokio::test]
    async fn tokens_from_the_legacy_state_list() {
        let backend: Arc<dyn KeyBackend> = Arc::new(MemoryBackend::default());
        let first = mgr(backend.clone(), DtConfig::default()).await;
        let live = first.issue("alice", &[], "yarn", None, "x").await.unwrap();
        let gone = first.issue("bob", &[], "yarn", None, "x").await.unwrap();
        let seq = |t: &str| {
            TokenIdent::decode(&Token::decode_url_string(t).unwrap().identifier)
                .unwrap()
                .sequence
        };
        let state = serde_json::json!({
            "next_seq": 7,
            "tokens": { seq(&live).to_string(): {
                "owner": "alice", "renewer": "yarn", "renew": now_ms() + 60_000, "max": now_ms() + 600_000
            }}
        });
        backend
            .put_shared(SLOT_LEGACY_STATE, state.to_string().as_bytes(), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let m = mgr(backend.clone(), DtConfig::default()).await;
        assert_eq!(m.verify(&live).await.unwrap().owner, "alice");
        assert!(
            m.verify(&gone).await.is_err(),
            "not in the legacy list: cancelled"
        );
        assert!(m.renew(&gone, "yarn").await.is_err());
        // A legacy token renewed or cancelled now gets a record like any other.
        assert!(m.renew(&live, "yarn").await.is_ok());
        m.cancel(&live, None).await.unwrap();
        assert!(m.verify(&live).await.is_err());
        // New tokens are not judged by the list.
        let fresh = m.issue("carol", &[], "yarn", None, "x").await.unwrap();
        assert!(m.verify(&fresh).await.is_ok());
    }

    #[tokio::test]
    async fn an_unrenewed_token_expires_after_the_renew_interval() {
        let backend: Arc<dyn KeyBackend> = Arc::new(MemoryBackend::default());
        let m = mgr(
            backend,
            DtConfig {
                renew_interval: Duration::from_millis(1),
                ..DtConfig::default()
            },
        )
        .await;
        let t = m.issue("alice", &[], "yarn", None, "alice").await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(m.verify(&t).await.is_err());
        assert!(m.renew(&t, "yarn").await.is_err(), "too late to renew");
    }
}
