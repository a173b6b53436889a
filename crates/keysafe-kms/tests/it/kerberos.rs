//! Kerberos/SPNEGO against a real MIT KDC started per test (`kdc.rs`), driven over HTTP by the
//! gateway's own GSSAPI initiator (tickets from `kinit` into a ticket cache). The stock Hadoop
//! client over Kerberos is in `hadoop.rs`.

use crate::common::*;
use crate::kdc::Kdc;
use keysafe_kms::KmsConfig;
use keysafe_kms::config::AuthType;
use keysafe_kms::kerberos::SpnegoClient;
use reqwest::{Method, StatusCode};
use std::path::{Path, PathBuf};

pub const REALM: &str = "KMS.TEST";

/// A KDC with the gateway's service principals (one keytab for every host name a client may
/// use) and some users (one keytab for all of them).
pub struct Realm {
    pub kdc: Kdc,
    pub service_keytab: PathBuf,
    pub users_keytab: PathBuf,
}

pub const SERVICES: &[&str] = &["HTTP/localhost", "HTTP/127.0.0.1", "HTTP/127.0.0.2"];
pub const USERS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "oozie",
    "hdfs/localhost",
    "backup/localhost",
];

impl Realm {
    pub fn start() -> Realm {
        let kdc = Kdc::start(REALM);
        kdc.add(SERVICES);
        kdc.add(USERS);
        let service_keytab = kdc.keytab("http.keytab", SERVICES);
        let users_keytab = kdc.keytab("users.keytab", USERS);
        Realm {
            kdc,
            service_keytab,
            users_keytab,
        }
    }

    /// A ticket cache for `user` holding a service ticket for `HTTP/localhost`.
    pub fn tickets(&self, user: &str) -> PathBuf {
        self.kdc.kinit(
            user,
            &self.users_keytab,
            &[&format!("HTTP/localhost@{REALM}")],
        )
    }
}

/// Gateway configuration for Kerberos with the realm's service keytab.
pub fn kerberos(c: &mut KmsConfig, keytab: &Path) {
    c.auth.kind = AuthType::Kerberos;
    c.auth.principal = Some(format!("HTTP/localhost@{REALM}"));
    c.auth.keytab = Some(keytab.to_owned());
}

fn negotiate(cache: &Path) -> String {
    let c = SpnegoClient::from_ticket_cache(cache).unwrap();
    format!(
        "Negotiate {}",
        c.token(&format!("HTTP/localhost@{REALM}")).unwrap()
    )
}

async fn send(
    h: &reqwest::Client,
    method: Method,
    url: &str,
    auth: Option<&str>,
    cookie: Option<&str>,
) -> Resp {
    let mut rb = h.request(method, url);
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    if let Some(c) = cookie {
        rb = rb.header("cookie", c);
    }
    let r = rb.send().await.unwrap();
    Resp {
        status: r.status(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

#[tokio::test]
async fn spnego_negotiation_then_cookie_and_refusals() {
    let realm = Realm::start();
    let env = Env::new().await;
    let kt = realm.service_keytab.clone();
    let gw = env.gateway("127.0.0.1", |c, _| kerberos(c, &kt)).await;
    let h = http();
    let names = format!("{}/keys/names", gw.base);

    // No credentials: 401 with the Negotiate challenge, and no key material anywhere.
    let r = send(&h, Method::OPTIONS, &names, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Negotiate");
    // A pseudo user name means nothing here.
    let r = send(
        &h,
        Method::GET,
        &format!("{names}?user.name=alice"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // alice negotiates: 200, the mutual-authentication token, and a kerberos-dt cookie.
    let alice = realm.tickets("alice");
    let r = send(&h, Method::OPTIONS, &names, Some(&negotiate(&alice)), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mutual = r.headers["www-authenticate"].to_str().unwrap();
    assert!(
        mutual.starts_with("Negotiate ") && mutual.len() > 20,
        "{mutual}"
    );
    let cookie = set_cookie(&r.headers).unwrap();
    assert!(
        cookie.contains("u=alice&p=alice@KMS.TEST&t=kerberos-dt&e="),
        "{cookie}"
    );
    // The cookie alone authenticates later requests, without a new negotiation.
    let r = send(
        &h,
        Method::POST,
        &format!("{}/keys", gw.base),
        None,
        Some(&cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text); // empty body: authenticated
    let r = h
        .post(format!("{}/keys", gw.base))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body(r#"{"name":"k1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().get("set-cookie").is_none());

    // Without credentials, _versions answers 401 and holds no material.
    let r = send(
        &h,
        Method::GET,
        &format!("{}/key/k1/_versions", gw.base),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.text.contains("material"), "{}", r.text);

    // A pseudo cookie (type simple-dt) signed with the same secret is not a Kerberos one.
    let simple = gw.gw.cookies.issue("admin", None, "simple-dt");
    let r = send(
        &h,
        Method::GET,
        &names,
        None,
        Some(&format!("hadoop.auth=\"{simple}\"")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Garbage and replayed tokens are refused with 403 (AuthenticationException).
    let r = send(&h, Method::GET, &names, Some("Negotiate AAAA"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.exception().ends_with("AuthenticationException"));
    let r = send(&h, Method::GET, &names, Some("Negotiate !!!"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let token = negotiate(&alice);
    let r = send(&h, Method::GET, &names, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&h, Method::GET, &names, Some(&token), None).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a replayed authenticator must be refused: {}",
        r.text
    );
    // Another scheme gets the challenge.
    let r = send(&h, Method::GET, &names, Some("Basic YWxpY2U6eA=="), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // The audit log names the mapped user.
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(
        log.contains("OK[op=CREATE_KEY, key=k1, user=alice]"),
        "{log}"
    );
}

/// `auth_to_local` decides the user name, and the ACLs judge that name: a principal mapped to a
/// name the ACLs refuse gets 403; a principal no rule maps is refused.
#[tokio::test]
async fn auth_to_local_rules_then_acls() {
    let realm = Realm::start();
    let env = Env::new().await;
    let kt = realm.service_keytab.clone();
    let gw = env
        .gateway("127.0.0.1", |c, d| {
            kerberos(c, &kt);
            // Service principals of the realm map to their service user; carol is an intern;
            // other users of the realm keep their name; two-component principals without a
            // rule (backup/localhost) map to nothing.
            c.auth.name_rules = [
                r"RULE:[2:$1@$0](hdfs@KMS\.TEST)s/.*/hdfs/",
                r"RULE:[1:$1@$0](carol@KMS\.TEST)s/.*/intern/",
                r"RULE:[1:$1@$0](.*@KMS\.TEST)s/@.*//",
            ]
            .join("\n");
            std::fs::write(
                d.join("kms-acls.xml"),
                r#"<configuration>
  <property><name>hadoop.kms.acl.GET_KEYS</name><value>alice,hdfs</value></property>
  <property><name>hadoop.kms.blacklist.GET_KEYS</name><value>intern</value></property>
</configuration>"#,
            )
            .unwrap();
            c.acl_file = Some(d.join("kms-acls.xml"));
        })
        .await;
    let h = http();
    let names = format!("{}/keys/names", gw.base);
    for (who, status) in [
        ("alice", StatusCode::OK),
        ("hdfs/localhost", StatusCode::OK),
        ("carol", StatusCode::FORBIDDEN),
        ("bob", StatusCode::FORBIDDEN),
    ] {
        let cc = realm.tickets(who);
        let r = send(&h, Method::GET, &names, Some(&negotiate(&cc)), None).await;
        assert_eq!(r.status, status, "{who}: {}", r.text);
        if status == StatusCode::FORBIDDEN {
            assert!(
                r.exception().ends_with("AuthorizationException"),
                "{who}: {}",
                r.text
            );
        }
    }
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(log.contains("OK[op=GET_KEYS, user=hdfs]"), "{log}");
    assert!(
        log.contains("UNAUTHORIZED[op=GET_KEYS, user=intern]"),
        "{log}"
    );
    // No rule maps backup/localhost: refused before any ACL, as an authentication failure.
    let cc = realm.tickets("backup/localhost");
    let r = send(&h, Method::GET, &names, Some(&negotiate(&cc)), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.exception().ends_with("AuthenticationException"));
    assert!(r.message().contains("No rules applied"), "{}", r.text);
}

/// A ticket from another realm: without trust it cannot be decrypted with the gateway's keys;
/// with cross-realm trust it can, but no rule maps a foreign principal (DEFAULT maps only the
/// gateway's realm).
#[tokio::test]
async fn another_realms_tickets_are_refused() {
    let realm = Realm::start();
    let other = Kdc::start_with("OTHER.TEST", &[&realm.kdc]);
    // Trust OTHER.TEST -> KMS.TEST (the same krbtgt key in both KDCs).
    realm
        .kdc
        .add_with_password("krbtgt/KMS.TEST@OTHER.TEST", "cross-realm-password");
    other.add_with_password("krbtgt/KMS.TEST@OTHER.TEST", "cross-realm-password");
    // OTHER.TEST has its own HTTP/localhost with another key.
    other.add(&["eve", "HTTP/localhost"]);
    let eve_kt = other.keytab("eve.keytab", &["eve"]);
    let env = Env::new().await;
    let kt = realm.service_keytab.clone();
    let gw = env.gateway("127.0.0.1", |c, _| kerberos(c, &kt)).await;
    let h = http();
    let names = format!("{}/keys/names", gw.base);

    // eve's ticket for OTHER.TEST's HTTP/localhost: not for this gateway's keys.
    let cc = other.kinit("eve", &eve_kt, &["HTTP/localhost@OTHER.TEST"]);
    let c = SpnegoClient::from_ticket_cache(&cc).unwrap();
    let tok = c.token("HTTP/localhost@OTHER.TEST").unwrap();
    let r = send(
        &h,
        Method::GET,
        &names,
        Some(&format!("Negotiate {tok}")),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // Through the trust, eve gets a real ticket for HTTP/localhost@KMS.TEST ...
    let cc = other.kinit("eve", &eve_kt, &["HTTP/localhost@KMS.TEST"]);
    let r = send(&h, Method::GET, &names, Some(&negotiate(&cc)), None).await;
    // ... which GSSAPI accepts, but eve@OTHER.TEST maps to no user.
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.message().contains("eve@OTHER.TEST"), "{}", r.text);
    assert!(
        r.headers
            .get("set-cookie")
            .is_none_or(|c| !c.to_str().unwrap().contains("u=eve"))
    );
}

#[tokio::test]
async fn an_expired_cookie_forces_a_new_negotiation() {
    let realm = Realm::start();
    let env = Env::new().await;
    let kt = realm.service_keytab.clone();
    let gw = env
        .gateway("127.0.0.1", |c, _| {
            kerberos(c, &kt);
            c.auth.token_validity = std::time::Duration::from_secs(1);
        })
        .await;
    let h = http();
    let names = format!("{}/keys/names", gw.base);
    let alice = realm.tickets("alice");
    let r = send(&h, Method::OPTIONS, &names, Some(&negotiate(&alice)), None).await;
    let cookie = set_cookie(&r.headers).unwrap();
    assert_eq!(
        send(&h, Method::GET, &names, None, Some(&cookie))
            .await
            .status,
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let r = send(&h, Method::GET, &names, None, Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "expired cookie");
    assert_eq!(r.headers["www-authenticate"], "Negotiate");
    let r = send(&h, Method::GET, &names, Some(&negotiate(&alice)), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(set_cookie(&r.headers).is_some(), "a fresh cookie");
}

/// Tokens are issued to Kerberos-authenticated callers only (not to a token holder), are
/// honoured without any ticket, and doAs works on top of Kerberos.
#[tokio::test]
async fn delegation_tokens_and_doas_over_kerberos() {
    let realm = Realm::start();
    let env = Env::new().await;
    let kt = realm.service_keytab.clone();
    let gw = env
        .gateway("127.0.0.1", |c, _| {
            kerberos(c, &kt);
            c.proxyuser.insert(
                "oozie".into(),
                keysafe_kms::config::ProxyUserConfig {
                    users: Some("alice".into()),
                    groups: None,
                    hosts: Some("127.0.0.1".into()),
                },
            );
        })
        .await;
    let h = http();
    let alice = realm.tickets("alice");
    let r = send(
        &h,
        Method::GET,
        &format!("{}/?op=GETDELEGATIONTOKEN&renewer=yarn", gw.base),
        Some(&negotiate(&alice)),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let tok = r.json()["Token"]["urlString"].as_str().unwrap().to_owned();
    // Used with no Kerberos at all.
    let r = h
        .get(format!("{}/keys/names", gw.base))
        .header("X-Hadoop-Delegation-Token", &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A token does not get another token.
    let r = h
        .get(format!(
            "{}/?op=GETDELEGATIONTOKEN&renewer=yarn&delegation={tok}",
            gw.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The audit log never holds the token.
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(!log.contains(&tok[..20]), "{log}");

    // doAs: oozie (Kerberos) acts for alice, not for bob.
    let oozie = realm.tickets("oozie");
    let r = h
        .post(format!("{}/keys?doAs=alice", gw.base))
        .header("authorization", negotiate(&oozie))
        .header("content-type", "application/json")
        .body(r#"{"name":"for-alice"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = send(
        &h,
        Method::GET,
        &format!("{}/keys/names?doAs=bob", gw.base),
        Some(&negotiate(&oozie)),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(
        log.contains("OK[op=CREATE_KEY, key=for-alice, user=alice]"),
        "{log}"
    );
}

/// A gateway whose keytab lacks its principal, or that has no keytab, does not start.
#[tokio::test]
async fn a_wrong_keytab_stops_the_start() {
    let realm = Realm::start();
    let env = Env::new().await;
    let mut cfg = KmsConfig::default();
    cfg.auth.kind = AuthType::Kerberos;
    cfg.auth.principal = Some(format!("HTTP/elsewhere@{REALM}"));
    cfg.auth.keytab = Some(realm.service_keytab.clone());
    let e = keysafe_kms::Gateway::new(&env.client.home, env.client.client.clone(), &cfg)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("HTTP/elsewhere@KMS.TEST"), "{e}");
    cfg.auth.principal = Some(format!("HTTP/localhost@{REALM}"));
    cfg.auth.keytab = Some(realm.kdc.dir.path().join("missing.keytab"));
    let e = keysafe_kms::Gateway::new(&env.client.home, env.client.client.clone(), &cfg)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.keytab"), "{e}");
}
