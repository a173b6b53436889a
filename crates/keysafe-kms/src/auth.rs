//! Authentication as Hadoop's `KMSAuthenticationFilter` does it: the signed `hadoop.auth`
//! cookie, an [`HttpAuthenticator`] for first contact (pseudo here; Kerberos/SPNEGO in
//! `kerberos`, client certificates in `certauth`), and proxy users (`doAs`). Delegation tokens
//! live in `delegation`. The cookie secret is shared by all gateways through the
//! [`KeyBackend`].

use crate::backend::{BackendError, KeyBackend};
use crate::certauth::PeerCertificate;
use crate::config::ProxyUserConfig;
use crate::crypto::{ct_eq, hmac_sha256, random_bytes};
use crate::error::{KmsError, KmsResult};
use crate::groups::Groups;
use crate::kms::backend_err;
use base64::Engine;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
use zeroize::Zeroizing;

pub const COOKIE_NAME: &str = "hadoop.auth";
const SLOT_COOKIE: &str = "cookie-signer-secret";

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
    /// Authenticated as `user` (a short name; for Kerberos, `principal` is the client's full
    /// principal). `headers` go on the response (for SPNEGO, the final
    /// `WWW-Authenticate: Negotiate <token>`); the gateway adds the `hadoop.auth` cookie.
    User {
        user: String,
        principal: Option<String>,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
    /// A multi-round scheme needs another round: answer 401 with these headers
    /// (`WWW-Authenticate: Negotiate <token>`).
    Continue {
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
}

/// What an authenticator sees of a request: its query, headers, and the connection's verified
/// client certificate (HTTPS with client authentication only).
pub struct AuthRequest<'a> {
    pub query: &'a [(String, String)],
    pub headers: &'a http::HeaderMap,
    pub peer_certificate: Option<&'a PeerCertificate>,
}

/// First-contact authentication (what `AuthenticationHandler` does in Hadoop). Cookies,
/// delegation tokens and doAs are handled around it.
#[async_trait::async_trait]
pub trait HttpAuthenticator: Send + Sync {
    /// The `t=` value of cookies it issues (`simple-dt`, `kerberos-dt`).
    fn token_type(&self) -> &'static str;
    /// The `WWW-Authenticate` challenge of a 401.
    fn challenge(&self) -> &'static str;
    /// Whether a valid `hadoop.auth` cookie is enough on its own (true for pseudo and Kerberos,
    /// as in Hadoop). When false, every request is authenticated afresh and a cookie is only
    /// accepted if it names the same user.
    fn cookie_alone_authenticates(&self) -> bool {
        true
    }
    /// Authenticates from the request.
    async fn authenticate(&self, req: &AuthRequest<'_>) -> KmsResult<AuthStep>;
}

/// `PseudoAuthenticationHandler`: the user names themselves with `user.name`.
pub struct PseudoAuthenticator;

#[async_trait::async_trait]
impl HttpAuthenticator for PseudoAuthenticator {
    fn token_type(&self) -> &'static str {
        "simple-dt"
    }
    fn challenge(&self) -> &'static str {
        "PseudoAuth"
    }
    async fn authenticate(&self, req: &AuthRequest<'_>) -> KmsResult<AuthStep> {
        Ok(req
            .query
            .iter()
            .find(|(k, _)| k == "user.name")
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .map_or(AuthStep::None, |user| AuthStep::User {
                user,
                principal: None,
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

    /// The cookie value (without quotes): `u=..&p=..&t=..&e=..&s=..` (`p` is the principal,
    /// the user name itself except for Kerberos).
    pub fn issue(&self, user: &str, principal: Option<&str>, token_type: &str) -> String {
        let e = now_ms() + self.validity.as_millis() as i64;
        // A principal with characters that structure the cookie is left out (the user name,
        // already checked, stands in), so it can never forge an attribute.
        let p = principal
            .filter(|p| !p.contains(['&', '=', '"', ';', ',']) && !p.chars().any(char::is_control))
            .unwrap_or(user);
        let payload = format!("u={user}&p={p}&t={token_type}&e={e}");
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

/// The `Cookie` header's `hadoop.auth` value, if any. The header is read as UTF-8, not only
/// ASCII: a user name may have other characters, and the cookie issued for it carries them
/// (the value is checked by its MAC, not by its alphabet).
pub fn cookie_value(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
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
    use crate::config::GroupsConfig;

    #[test]
    fn cookies() {
        let s = CookieSigner::new(Zeroizing::new(vec![7; 32]), Duration::from_secs(60));
        let c = s.issue("alice", None, "simple-dt");
        assert!(c.starts_with("u=alice&p=alice&t=simple-dt&e="));
        let k = s.issue("alice", Some("alice@EXAMPLE.COM"), "kerberos-dt");
        assert!(
            k.starts_with("u=alice&p=alice@EXAMPLE.COM&t=kerberos-dt&e="),
            "{k}"
        );
        assert_eq!(s.verify(&k, "kerberos-dt").as_deref(), Some("alice"));
        assert_eq!(
            s.verify(&k, "simple-dt"),
            None,
            "a Kerberos cookie is not a pseudo one"
        );
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
            s.verify(&expired.issue("alice", None, "simple-dt"), "simple-dt"),
            None
        );
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("x=1; hadoop.auth=\"{c}\"").parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some(c.as_str()));
    }

    /// A user name outside ASCII: the cookie issued for it (sent in `Set-Cookie` as UTF-8)
    /// is found again in the `Cookie` header and verifies. It used to be dropped, so such a
    /// user authenticated afresh on every request. The name is the one the `kms_cookie` fuzz
    /// target found.
    #[test]
    fn cookies_for_non_ascii_user_names_are_read_back() {
        let s = CookieSigner::new(Zeroizing::new(vec![7; 32]), Duration::from_secs(60));
        for user in ["ooooooooooooooooooo\u{f450}", "jörg", "用户"] {
            check_user_name(user).unwrap();
            let c = s.issue(user, Some(&format!("{user}@EXAMPLE.COM")), "kerberos-dt");
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::COOKIE,
                http::HeaderValue::from_str(&format!("a=b; hadoop.auth=\"{c}\"")).unwrap(),
            );
            assert_eq!(cookie_value(&h).as_deref(), Some(c.as_str()), "{user}");
            assert_eq!(s.verify(&c, "kerberos-dt").as_deref(), Some(user));
        }
        // Bytes that are not UTF-8 are no cookie (and no panic).
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            http::HeaderValue::from_bytes(b"hadoop.auth=u=\xff&t=x").unwrap(),
        );
        assert_eq!(cookie_value(&h), None);
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
