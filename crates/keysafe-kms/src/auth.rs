//! Authentication as Hadoop's `KMSAuthenticationFilter` does it: the signed `hadoop.auth` cookie,
//! delegation tokens (`kms-dt`), an [`HttpAuthenticator`] for first contact (pseudo/simple today;
//! a Kerberos/SPNEGO one plugs in here), and proxy users (`doAs`). The cookie secret and the
//! token master key and state are shared by all gateways through the [`KeyBackend`].

use crate::backend::{BackendError, KeyBackend};
use crate::config::{DtConfig, ProxyUserConfig};
use crate::crypto::{ct_eq, hmac_sha1, hmac_sha256, random_bytes};
use crate::error::{KmsError, KmsResult};
use crate::groups::Groups;
use crate::kms::backend_err;
use crate::token::{KIND, Token, TokenIdent};
use base64::Engine;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

pub const COOKIE_NAME: &str = "hadoop.auth";
const SLOT_COOKIE: &str = "cookie-signer-secret";
const SLOT_DT_KEY: &str = "dt-master-key";
const SLOT_DT_STATE: &str = "dt-state";
/// How long a token-state snapshot is trusted for a token it contains (cancellations made through
/// another gateway take at most this long to be seen here).
const DT_STATE_TTL: Duration = Duration::from_secs(5);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads a shared secret, creating it (race-free, `If-None-Match: *`) if no gateway has yet.
pub async fn shared_secret(
    backend: &dyn KeyBackend,
    slot: &str,
    len: usize,
) -> KmsResult<Zeroizing<Vec<u8>>> {
    for _ in 0..3 {
        if let Some(b) = backend.shared(slot).await.map_err(backend_err)? {
            return Ok(b.data);
        }
        let fresh = random_bytes(len)?;
        match backend.put_shared(slot, &fresh, None).await {
            Ok(_) => return Ok(fresh),
            // Another gateway created it first: use theirs.
            Err(BackendError::Conflict) => continue,
            Err(e) => return Err(backend_err(e)),
        }
    }
    Err(KmsError::io(format!(
        "cannot set up the shared secret {slot}"
    )))
}

/// User names the gateway accepts: no control characters, whitespace or the characters that
/// structure cookies and ACLs (`& = " ; ,`), at most 256 bytes.
pub fn check_user_name(u: &str) -> KmsResult<()> {
    let bad = u.is_empty()
        || u.len() > 256
        || u.chars().any(|c| {
            c.is_control() || c.is_whitespace() || matches!(c, '&' | '=' | '"' | ';' | ',')
        });
    if bad {
        return Err(KmsError::authn(
            "invalid user name: it must be 1-256 characters without whitespace, control characters or & = \" ; ,",
        ));
    }
    Ok(())
}

/// What a first-contact authenticator made of a request.
#[derive(Debug, Default)]
pub enum AuthStep {
    /// No credentials of this scheme: answer 401 with [`HttpAuthenticator::challenge`].
    #[default]
    None,
    /// Authenticated as `user` (a short name). `headers` go on the response (for SPNEGO, the
    /// final `WWW-Authenticate: Negotiate <token>`); the gateway adds the `hadoop.auth` cookie.
    User {
        user: String,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
    /// A multi-round scheme needs another round: answer 401 with these headers
    /// (`WWW-Authenticate: Negotiate <token>`).
    Continue {
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
}

/// First-contact authentication (what `AuthenticationHandler` does in Hadoop). Cookies,
/// delegation tokens and doAs are handled around it, so a Kerberos/SPNEGO implementation only
/// has to implement this trait (token type `kerberos-dt`, challenge `Negotiate`, and the GSS
/// exchange in `authenticate`) and be installed as `Gateway::authenticator`.
pub trait HttpAuthenticator: Send + Sync {
    /// The `t=` value of cookies it issues (`simple-dt`, `kerberos-dt`).
    fn token_type(&self) -> &'static str;
    /// The `WWW-Authenticate` challenge of a 401.
    fn challenge(&self) -> &'static str;
    /// Authenticates from the request's query and headers.
    fn authenticate(
        &self,
        query: &[(String, String)],
        headers: &http::HeaderMap,
    ) -> KmsResult<AuthStep>;
}

/// `PseudoAuthenticationHandler`: the user names themselves with `user.name`.
pub struct PseudoAuthenticator;

impl HttpAuthenticator for PseudoAuthenticator {
    fn token_type(&self) -> &'static str {
        "simple-dt"
    }
    fn challenge(&self) -> &'static str {
        "PseudoAuth"
    }
    fn authenticate(
        &self,
        query: &[(String, String)],
        _headers: &http::HeaderMap,
    ) -> KmsResult<AuthStep> {
        Ok(query
            .iter()
            .find(|(k, _)| k == "user.name")
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .map_or(AuthStep::None, |user| AuthStep::User {
                user,
                headers: vec![],
            }))
    }
}

/// Signs and checks `hadoop.auth` cookies.
pub struct CookieSigner {
    secret: Zeroizing<Vec<u8>>,
    validity: Duration,
}

impl CookieSigner {
    pub fn new(secret: Zeroizing<Vec<u8>>, validity: Duration) -> Self {
        Self { secret, validity }
    }

    pub async fn shared(backend: &dyn KeyBackend, validity: Duration) -> KmsResult<Self> {
        Ok(Self::new(
            shared_secret(backend, SLOT_COOKIE, 32).await?,
            validity,
        ))
    }

    fn sign(&self, payload: &str) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(hmac_sha256(&self.secret, payload.as_bytes()))
    }

    /// The cookie value (without quotes): `u=..&p=..&t=..&e=..&s=..`.
    pub fn issue(&self, user: &str, token_type: &str) -> String {
        let e = now_ms() + self.validity.as_millis() as i64;
        let payload = format!("u={user}&p={user}&t={token_type}&e={e}");
        let s = self.sign(&payload);
        format!("{payload}&s={s}")
    }

    /// The user of a valid, unexpired cookie of the given type.
    pub fn verify(&self, value: &str, token_type: &str) -> Option<String> {
        let value = value.trim().trim_matches('"');
        let (payload, sig) = value.rsplit_once("&s=")?;
        if !ct_eq(self.sign(payload).as_bytes(), sig.as_bytes()) {
            return None;
        }
        let mut u = None;
        let mut t = None;
        let mut e = None;
        for part in payload.split('&') {
            // Each attribute at most once.
            match part.split_once('=')? {
                ("u", v) if u.is_none() => u = Some(v),
                ("t", v) if t.is_none() => t = Some(v),
                ("e", v) if e.is_none() => e = Some(v.parse::<i64>().ok()?),
                ("u" | "t" | "e", _) => return None,
                _ => {}
            }
        }
        if t? != token_type || e? <= now_ms() {
            return None;
        }
        u.filter(|u| !u.is_empty()).map(str::to_owned)
    }
}

/// The `Cookie` header's `hadoop.auth` value, if any.
pub fn cookie_value(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenEntry {
    owner: String,
    renewer: String,
    /// Current expiry (renewal date), epoch ms.
    renew: i64,
    max: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DtState {
    next_seq: i32,
    tokens: BTreeMap<i32, TokenEntry>,
}

/// The delegation-token secret manager, its state kept in the backend for every gateway.
pub struct DtManager {
    backend: Arc<dyn KeyBackend>,
    master: Zeroizing<Vec<u8>>,
    cfg: DtConfig,
    snapshot: Mutex<Option<(Instant, HashMap<i32, TokenEntry>)>>,
}

/// The identity a verified delegation token carries.
#[derive(Debug, Clone)]
pub struct TokenUser {
    pub owner: String,
    pub real_user: Option<String>,
}

const MASTER_KEY_ID: i32 = 1;

impl DtManager {
    pub async fn shared(backend: Arc<dyn KeyBackend>, cfg: DtConfig) -> KmsResult<Self> {
        let master = shared_secret(&*backend, SLOT_DT_KEY, 64).await?;
        Ok(Self {
            backend,
            master,
            cfg,
            snapshot: Mutex::new(None),
        })
    }

    async fn read_state(&self) -> KmsResult<(DtState, Option<u64>)> {
        match self
            .backend
            .shared(SLOT_DT_STATE)
            .await
            .map_err(backend_err)?
        {
            None => Ok((DtState::default(), None)),
            Some(b) => {
                let s: DtState = serde_json::from_slice(&b.data)
                    .map_err(|_| KmsError::io("delegation-token state is malformed"))?;
                Ok((s, Some(b.version)))
            }
        }
    }

    /// Read-modify-write with compare-and-set, retried when another gateway wrote first.
    async fn update<T>(&self, f: impl Fn(&mut DtState) -> KmsResult<T>) -> KmsResult<T> {
        for _ in 0..16 {
            let (mut s, v) = self.read_state().await?;
            let now = now_ms();
            s.tokens.retain(|_, e| e.renew > now);
            let out = f(&mut s)?;
            let data = serde_json::to_vec(&s).map_err(|e| KmsError::io(e.to_string()))?;
            match self.backend.put_shared(SLOT_DT_STATE, &data, v).await {
                Ok(_) => {
                    *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), s.tokens.into_iter().collect()));
                    return Ok(out);
                }
                Err(BackendError::Conflict) => continue,
                Err(e) => return Err(backend_err(e)),
            }
        }
        Err(KmsError::io(
            "delegation-token state is too busy, try again",
        ))
    }

    fn password(&self, ident: &[u8]) -> Vec<u8> {
        hmac_sha1(&self.master, ident)
    }

    /// GETDELEGATIONTOKEN.
    pub async fn issue(
        &self,
        owner: &str,
        renewer: &str,
        real_user: Option<&str>,
    ) -> KmsResult<String> {
        let now = now_ms();
        let max = now + self.cfg.max_lifetime.as_millis() as i64;
        let renew = (now + self.cfg.renew_interval.as_millis() as i64).min(max);
        let seq = self
            .update(|s| {
                s.next_seq = s.next_seq.checked_add(1).unwrap_or(1);
                let seq = s.next_seq;
                s.tokens.insert(
                    seq,
                    TokenEntry {
                        owner: owner.to_owned(),
                        renewer: renewer.to_owned(),
                        renew,
                        max,
                    },
                );
                Ok(seq)
            })
            .await?;
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

    /// Decodes and checks the signature (not expiry or cancellation).
    fn authentic(&self, url_string: &str) -> Option<TokenIdent> {
        let t = Token::decode_url_string(url_string)?;
        if t.kind != KIND || !ct_eq(&self.password(&t.identifier), &t.password) {
            return None;
        }
        let id = TokenIdent::decode(&t.identifier)?;
        (id.master_key_id == MASTER_KEY_ID).then_some(id)
    }

    /// Authenticates a request by token: signature, expiry, and not cancelled.
    pub async fn verify(&self, url_string: &str) -> KmsResult<TokenUser> {
        let invalid = || KmsError::authn("Invalid delegation token");
        let id = self.authentic(url_string).ok_or_else(invalid)?;
        let now = now_ms();
        if id.max_date <= now {
            return Err(KmsError::authn("Delegation token has expired"));
        }
        let cached = {
            let g = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            g.as_ref()
                .filter(|(at, _)| at.elapsed() < DT_STATE_TTL)
                .and_then(|(_, m)| m.get(&id.sequence).cloned())
        };
        let entry = match cached {
            Some(e) => Some(e),
            None => {
                let (s, _) = self.read_state().await?;
                let e = s.tokens.get(&id.sequence).cloned();
                *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), s.tokens.into_iter().collect()));
                e
            }
        };
        let entry = entry.ok_or_else(invalid)?;
        if entry.renew <= now || entry.owner != id.owner {
            return Err(KmsError::authn("Delegation token has expired"));
        }
        Ok(TokenUser {
            owner: id.owner,
            real_user: Some(id.real_user).filter(|r| !r.is_empty()),
        })
    }

    /// RENEWDELEGATIONTOKEN: only the token's renewer may; returns the new expiry.
    pub async fn renew(&self, url_string: &str, caller: &str) -> KmsResult<i64> {
        let forbidden = |m: String| {
            KmsError::new(crate::error::JavaClass::Authorization, m)
                .with_status(StatusCode::FORBIDDEN)
        };
        let id = self
            .authentic(url_string)
            .ok_or_else(|| forbidden("Invalid delegation token".into()))?;
        if id.renewer.is_empty() || id.renewer != caller {
            return Err(forbidden(format!(
                "Client {caller} tries to renew a token with renewer {}",
                id.renewer
            )));
        }
        let now = now_ms();
        if id.max_date <= now {
            return Err(forbidden("Delegation token has expired".into()));
        }
        let interval = self.cfg.renew_interval.as_millis() as i64;
        self.update(|s| {
            let e = s
                .tokens
                .get_mut(&id.sequence)
                .ok_or_else(|| forbidden("Renewal request for unknown token".into()))?;
            e.renew = (now + interval).min(e.max);
            Ok(e.renew)
        })
        .await
    }

    /// CANCELDELEGATIONTOKEN: the owner or the renewer (or anyone holding it, when the caller is
    /// not authenticated: the canceller is then the token's owner, as in Hadoop).
    pub async fn cancel(&self, url_string: &str, caller: Option<&str>) -> KmsResult<()> {
        let not_found = || {
            KmsError::io("Invalid delegation token, cannot cancel")
                .with_status(StatusCode::NOT_FOUND)
        };
        let id = self.authentic(url_string).ok_or_else(not_found)?;
        let canceller = caller.unwrap_or(&id.owner);
        if canceller != id.owner && canceller != id.renewer {
            return Err(KmsError::authz(format!(
                "{canceller} is not authorized to cancel the token"
            )));
        }
        self.update(|s| {
            s.tokens
                .remove(&id.sequence)
                .map(|_| ())
                .ok_or_else(not_found)
        })
        .await?;
        Ok(())
    }
}

/// `hadoop.kms.proxyuser.*` (Hadoop's `DefaultImpersonationProvider`).
pub struct ProxyUsers {
    rules: BTreeMap<String, ProxyUserConfig>,
}

fn list_has(list: &Option<String>, item: &str) -> bool {
    list.as_deref()
        .is_some_and(|l| l.split(',').map(str::trim).any(|x| x == "*" || x == item))
}

fn host_allowed(list: &Option<String>, ip: IpAddr) -> bool {
    let Some(l) = list.as_deref() else {
        return false;
    };
    l.split(',').map(str::trim).any(|h| {
        if h == "*" {
            return true;
        }
        if let Some((net, bits)) = h.split_once('/') {
            if let (Ok(IpAddr::V4(net)), Ok(bits), IpAddr::V4(ip)) =
                (net.parse::<IpAddr>(), bits.parse::<u32>(), ip)
            {
                if bits > 32 {
                    return false;
                }
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                return u32::from(net) & mask == u32::from(ip) & mask;
            }
            return false;
        }
        h.parse::<IpAddr>().is_ok_and(|h| h == ip)
    })
}

impl ProxyUsers {
    pub fn new(rules: BTreeMap<String, ProxyUserConfig>) -> Self {
        Self { rules }
    }

    pub fn authorize(
        &self,
        real: &str,
        doas: &str,
        remote: IpAddr,
        groups: &Groups,
    ) -> KmsResult<()> {
        let deny = || KmsError::authz(format!("User: {real} is not allowed to impersonate {doas}"));
        let rule = self.rules.get(real).ok_or_else(deny)?;
        let user_ok = list_has(&rule.users, doas)
            || groups.of(doas).iter().any(|g| list_has(&rule.groups, g))
            || rule.groups.as_deref().is_some_and(|g| g.trim() == "*");
        if !user_ok {
            return Err(deny());
        }
        if !host_allowed(&rule.hosts, remote) {
            return Err(KmsError::authz(format!(
                "Unauthorized connection for super-user: {real} from IP {remote}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::config::GroupsConfig;

    #[test]
    fn cookies() {
        let s = CookieSigner::new(Zeroizing::new(vec![7; 32]), Duration::from_secs(60));
        let c = s.issue("alice", "simple-dt");
        assert!(c.starts_with("u=alice&p=alice&t=simple-dt&e="));
        assert_eq!(s.verify(&c, "simple-dt").as_deref(), Some("alice"));
        assert_eq!(
            s.verify(&format!("\"{c}\""), "simple-dt").as_deref(),
            Some("alice")
        );
        assert_eq!(s.verify(&c, "kerberos-dt"), None, "wrong type");
        assert_eq!(
            s.verify(&c.replace("u=alice", "u=admin"), "simple-dt"),
            None,
            "tampered"
        );
        let other = CookieSigner::new(Zeroizing::new(vec![8; 32]), Duration::from_secs(60));
        assert_eq!(other.verify(&c, "simple-dt"), None, "other secret");
        let expired = CookieSigner::new(Zeroizing::new(vec![7; 32]), Duration::ZERO);
        assert_eq!(
            s.verify(&expired.issue("alice", "simple-dt"), "simple-dt"),
            None
        );
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("x=1; hadoop.auth=\"{c}\"").parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some(c.as_str()));
    }

    #[tokio::test]
    async fn tokens_issue_verify_renew_cancel() {
        let backend: Arc<dyn KeyBackend> = Arc::new(MemoryBackend::default());
        let a = DtManager::shared(backend.clone(), DtConfig::default())
            .await
            .unwrap();
        let b = DtManager::shared(backend, DtConfig::default())
            .await
            .unwrap();
        let t = a.issue("alice", "yarn", None).await.unwrap();
        // Another manager over the same backend honours it (shared master key and state).
        assert_eq!(b.verify(&t).await.unwrap().owner, "alice");
        assert!(
            b.renew(&t, "alice").await.is_err(),
            "only the renewer renews"
        );
        assert!(b.renew(&t, "yarn").await.unwrap() > now_ms());
        assert!(a.cancel(&t, Some("mallory")).await.is_err());
        b.cancel(&t, None).await.unwrap();
        assert!(b.verify(&t).await.is_err(), "cancelled");
        // A fresh gateway (no snapshot) sees the cancellation at once; one holding a snapshot
        // within DT_STATE_TTL.
        let c2 = DtManager::shared(a.backend.clone(), DtConfig::default())
            .await
            .unwrap();
        assert!(c2.verify(&t).await.is_err());
        assert_eq!(
            a.cancel(&t, None).await.unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
        // A forged token (right format, wrong key) is refused.
        let other: Arc<dyn KeyBackend> = Arc::new(MemoryBackend::default());
        let c = DtManager::shared(other, DtConfig::default()).await.unwrap();
        let forged = c.issue("admin", "yarn", None).await.unwrap();
        assert!(a.verify(&forged).await.is_err());
        assert!(a.verify("nonsense").await.is_err());
    }

    #[test]
    fn proxy_rules() {
        let mut rules = BTreeMap::new();
        rules.insert(
            "oozie".to_string(),
            ProxyUserConfig {
                users: Some("alice".into()),
                groups: Some("staff".into()),
                hosts: Some("127.0.0.1,10.0.0.0/8".into()),
            },
        );
        let mut gc = GroupsConfig::default();
        gc.users.insert("carol".into(), vec!["staff".into()]);
        let groups = Groups::new(&gc);
        let p = ProxyUsers::new(rules);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.authorize("oozie", "alice", lo, &groups).is_ok());
        assert!(
            p.authorize("oozie", "carol", lo, &groups).is_ok(),
            "by group"
        );
        assert!(p.authorize("oozie", "bob", lo, &groups).is_err());
        assert!(
            p.authorize("oozie", "alice", "10.1.2.3".parse().unwrap(), &groups)
                .is_ok()
        );
        assert!(
            p.authorize("oozie", "alice", "192.168.0.1".parse().unwrap(), &groups)
                .is_err()
        );
        assert!(
            p.authorize("alice", "oozie", lo, &groups).is_err(),
            "no rule"
        );
    }
}
