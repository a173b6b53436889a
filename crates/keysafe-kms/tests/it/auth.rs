//! Authentication (pseudo handshake, cookies, delegation tokens, doAs) and authorisation
//! (kms-acls.xml) through the wire, over a real keysafe server.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

const AUTHZ: &str = "org.apache.hadoop.security.authorize.AuthorizationException";
const AUTHN: &str = "org.apache.hadoop.security.authentication.client.AuthenticationException";

#[tokio::test]
async fn pseudo_handshake_and_cookie() {
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |_, _| {}).await;
    let anon = Caller::new("x");
    // OPTIONS without credentials: 401 PseudoAuth.
    let r = anon
        .raw(Method::OPTIONS, &format!("{}/keys/names", gw.base), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "PseudoAuth");
    // A real request without credentials: 401 as well, no key data.
    let r = anon
        .raw(Method::GET, &format!("{}/keys/names", gw.base), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // OPTIONS ?user.name=: 200 + signed cookie.
    let r = anon
        .raw(
            Method::OPTIONS,
            &format!("{}/keys/names?user.name=root", gw.base),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let raw = r.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        raw.starts_with("hadoop.auth=\"u=root&p=root&t=simple-dt&e="),
        "{raw}"
    );
    assert!(raw.contains("&s="));
    assert!(raw.ends_with("; Path=/; HttpOnly"));
    let cookie = set_cookie(&r.headers).unwrap();
    // A user name that would smuggle cookie attributes (or audit-log lines) is refused.
    for bad in ["x%26u%3Dadmin", "x%0AOK", "a+b"] {
        let r = anon
            .raw(
                Method::OPTIONS,
                &format!("{}/keys/names?user.name={bad}", gw.base),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{bad}");
        assert!(r.headers.get("set-cookie").is_none());
    }
    // The cookie alone authenticates.
    let mut c = Caller::new("root");
    c.cookie = Some(cookie.clone());
    let r = c
        .raw(Method::GET, &format!("{}/keys/names", gw.base), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers.get("set-cookie").is_none(),
        "no new cookie for a cookie request"
    );
    // A tampered cookie (another user, same signature) is refused.
    c.cookie = Some(cookie.replace("u=root&p=root", "u=admin&p=admin"));
    let r = c
        .raw(Method::GET, &format!("{}/keys/names", gw.base), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A cookie from a gateway of another organisation (another secret) is refused here.
    let other_env = Env::new().await;
    let other = other_env.gateway("127.0.0.1", |_, _| {}).await;
    let mut o = Caller::new("root");
    o.login(&other.base).await;
    let r = o
        .raw(Method::GET, &format!("{}/keys/names", gw.base), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A second gateway of the same organisation honours the first one's cookie.
    let gw2 = env.gateway("127.0.0.2", |_, _| {}).await;
    c.cookie = Some(cookie);
    let r = c
        .raw(Method::GET, &format!("{}/keys/names", gw2.base), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn https_listener() {
    let env = Env::new().await;
    let (cert, key) = (
        env.server.config.tls_cert.clone(),
        env.server.config.tls_key.clone(),
    );
    let gw = env
        .gateway("127.0.0.1", |c, _| {
            c.tls = Some(keysafe_kms::config::TlsConfig { cert, key });
        })
        .await;
    assert!(gw.base.starts_with("https://"));
    let mut c = Caller::new("alice");
    let r = c
        .http
        .request(
            Method::OPTIONS,
            format!("{}/keys/names?user.name=alice", gw.base),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
    let r = c
        .call(&gw, Method::POST, "/keys", Some(r#"{"name":"k"}"#))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("https://")
    );
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = gw.base.replace("https://", "http://");
    assert!(
        c.http
            .get(format!("{plain}/keys/names"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn delegation_tokens() {
    let env = Env::new().await;
    let a = env.gateway("127.0.0.1", |_, _| {}).await;
    let b = env.gateway("127.0.0.2", |_, _| {}).await;
    let mut root = Caller::new("root");
    root.call(&a, Method::POST, "/keys", Some(r#"{"name":"k"}"#))
        .await;
    // Get a token (renewer yarn).
    let r = root
        .call(
            &a,
            Method::GET,
            "/?op=GETDELEGATIONTOKEN&renewer=yarn",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t = r.json()["Token"]["urlString"].as_str().unwrap().to_owned();
    let id = keysafe_kms::token::Token::decode_url_string(&t).unwrap();
    assert_eq!(id.kind, "kms-dt");
    let ident = keysafe_kms::token::TokenIdent::decode(&id.identifier).unwrap();
    assert_eq!(
        (ident.owner.as_str(), ident.renewer.as_str()),
        ("root", "yarn")
    );
    // Used with only the header, at the OTHER gateway: authenticated as the owner, no cookie.
    let h = crate::common::http();
    let r = h
        .get(format!("{}/keys/names", b.base))
        .header("X-Hadoop-Delegation-Token", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("set-cookie").is_none());
    let r = h
        .get(format!("{}/keys/names?delegation={t}", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A forged token (changed owner, old password) is refused with 403 AuthenticationException.
    let mut forged_ident = ident.clone();
    forged_ident.owner = "admin".into();
    let forged = keysafe_kms::token::Token {
        identifier: forged_ident.encode(),
        ..id.clone()
    }
    .encode_url_string();
    let r = h
        .get(format!("{}/keys/names", a.base))
        .header("X-Hadoop-Delegation-Token", &forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["RemoteException"]["javaClassName"], AUTHN);
    // Renew: only the renewer (yarn), at b.
    let r = root
        .call(
            &b,
            Method::PUT,
            &format!("/?op=RENEWDELEGATIONTOKEN&token={t}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut yarn = Caller::new("yarn");
    let r = yarn
        .call(
            &b,
            Method::PUT,
            &format!("/?op=RENEWDELEGATIONTOKEN&token={t}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["long"].as_i64().unwrap() > ident.issue_date);
    let r = yarn
        .call(&b, Method::PUT, "/?op=RENEWDELEGATIONTOKEN", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        "Operation [RENEWDELEGATIONTOKEN] requires the parameter [token]"
    );
    let r = yarn
        .call(
            &b,
            Method::GET,
            &format!("/?op=RENEWDELEGATIONTOKEN&token={t}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A token cannot mint a token.
    let r = h
        .get(format!("{}/?op=GETDELEGATIONTOKEN&renewer=x", a.base))
        .header("X-Hadoop-Delegation-Token", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Cancel needs no authentication at all; then the token is dead everywhere.
    let r = h
        .put(format!("{}/?op=CANCELDELEGATIONTOKEN&token={t}", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = h
        .get(format!("{}/keys/names", b.base))
        .header("X-Hadoop-Delegation-Token", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = h
        .put(format!("{}/?op=CANCELDELEGATIONTOKEN&token={t}", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Unauthenticated GETDELEGATIONTOKEN: the pseudo challenge.
    let r = h
        .get(format!("{}/?op=GETDELEGATIONTOKEN&renewer=x", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

const ACLS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<configuration>
  <property><name>hadoop.kms.acl.CREATE</name><value>admin</value></property>
  <property><name>hadoop.kms.acl.DELETE</name><value>admin</value></property>
  <property><name>hadoop.kms.acl.ROLLOVER</name><value>admin</value></property>
  <property><name>hadoop.kms.acl.GET</name><value>admin</value></property>
  <property><name>hadoop.kms.acl.GET_KEYS</name><value>admin,alice</value></property>
  <property><name>hadoop.kms.acl.GET_METADATA</name><value>*</value></property>
  <property><name>hadoop.kms.acl.SET_KEY_MATERIAL</name><value> </value></property>
  <property><name>hadoop.kms.acl.GENERATE_EEK</name><value>hdfs</value></property>
  <property><name>hadoop.kms.acl.DECRYPT_EEK</name><value>* </value></property>
  <property><name>hadoop.kms.blacklist.DECRYPT_EEK</name><value>hdfs</value></property>
  <property><name>default.key.acl.MANAGEMENT</name><value>admin</value></property>
  <property><name>default.key.acl.GENERATE_EEK</name><value>hdfs</value></property>
  <property><name>default.key.acl.DECRYPT_EEK</name><value> users</value></property>
  <property><name>default.key.acl.READ</name><value>*</value></property>
  <property><name>key.acl.secret.DECRYPT_EEK</name><value>bob</value></property>
  <property><name>key.acl.secret.MANAGEMENT</name><value>admin</value></property>
  <property><name>key.acl.secret.GENERATE_EEK</name><value>hdfs</value></property>
</configuration>
"#;

#[tokio::test]
async fn acls_from_kms_acls_xml() {
    let env = Env::new().await;
    let gw = env
        .gateway("127.0.0.1", |c, dir| {
            std::fs::write(dir.join("kms-acls.xml"), ACLS).unwrap();
            c.acl_file = Some(dir.join("kms-acls.xml"));
            c.groups.users.insert("alice".into(), vec!["users".into()]);
        })
        .await;
    let mut admin = Caller::new("admin");
    let mut alice = Caller::new("alice");
    let mut hdfs = Caller::new("hdfs");
    let mut bob = Caller::new("bob");

    // Operation ACL: only admin creates; the 403 is final (no failover) and changes nothing.
    let r = alice
        .call(&gw, Method::POST, "/keys", Some(r#"{"name":"k"}"#))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.exception(), AUTHZ);
    assert_eq!(
        r.message(),
        "User:alice not allowed to do 'CREATE_KEY' on 'k'"
    );
    // admin creates, but without GET the material is withheld.
    let r = admin
        .call(&gw, Method::POST, "/keys", Some(r#"{"name":"k"}"#))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.json()["material"].as_str().is_some(), "admin has GET");
    // SET_KEY_MATERIAL is nobody (" "): caller material refused.
    let r = admin
        .call(
            &gw,
            Method::POST,
            "/keys",
            Some(r#"{"name":"m","length":128,"material":"MDEyMzQ1Njc4OWFiY2RlZg=="}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // GET_KEYS: alice yes, hdfs no.
    assert_eq!(
        alice
            .call(&gw, Method::GET, "/keys/names", None)
            .await
            .json(),
        json!(["k"])
    );
    let r = hdfs.call(&gw, Method::GET, "/keys/names", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.message(), "User:hdfs not allowed to do 'GET_KEYS'");
    // hdfs generates (op + default key ACL), but is blacklisted from decrypting.
    let r = hdfs
        .call(
            &gw,
            Method::GET,
            "/key/k/_eek?eek_op=generate&num_keys=2",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let e = r.json()[0].clone();
    let body = json!({"name":"k","iv":e["iv"],"material":e["encryptedKeyVersion"]["material"]})
        .to_string();
    let r = hdfs
        .call(
            &gw,
            Method::POST,
            "/keyversion/k%400/_eek?eek_op=decrypt",
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // alice decrypts through the group in default.key.acl.DECRYPT_EEK (" users").
    let r = alice
        .call(
            &gw,
            Method::POST,
            "/keyversion/k%400/_eek?eek_op=decrypt",
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // bob passes the op ACL but not the key ACL.
    let r = bob
        .call(
            &gw,
            Method::POST,
            "/keyversion/k%400/_eek?eek_op=decrypt",
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.message(),
        "User [bob] is not authorized to perform [DECRYPT_EEK] on key with ACL name [k]!!"
    );
    // GET (current version) is admin only.
    assert_eq!(
        alice
            .call(&gw, Method::GET, "/key/k/_currentversion", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // Per-key ACLs: "secret" has its own entries, so the defaults do not apply to it.
    admin
        .call(&gw, Method::POST, "/keys", Some(r#"{"name":"secret"}"#))
        .await;
    let e = hdfs
        .call(&gw, Method::GET, "/key/secret/_eek?eek_op=generate", None)
        .await
        .json()[0]
        .clone();
    let body =
        json!({"name":"secret","iv":e["iv"],"material":e["encryptedKeyVersion"]["material"]})
            .to_string();
    let r = alice
        .call(
            &gw,
            Method::POST,
            "/keyversion/secret%400/_eek?eek_op=decrypt",
            Some(&body),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "default key ACL must not apply"
    );
    let r = bob
        .call(
            &gw,
            Method::POST,
            "/keyversion/secret%400/_eek?eek_op=decrypt",
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // READ on "secret" is not listed: metadata is denied even though GET_METADATA is *.
    let r = alice
        .call(&gw, Method::GET, "/key/secret/_metadata", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // key.acl.name attribute: a key created with ACL name "secret" is governed by secret's ACLs.
    let r = admin
        .call(
            &gw,
            Method::POST,
            "/keys",
            Some(r#"{"name":"alias","attributes":{"key.acl.name":"secret"}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let e = hdfs
        .call(&gw, Method::GET, "/key/alias/_eek?eek_op=generate", None)
        .await
        .json()[0]
        .clone();
    let body = json!({"name":"alias","iv":e["iv"],"material":e["encryptedKeyVersion"]["material"]})
        .to_string();
    assert_eq!(
        bob.call(
            &gw,
            Method::POST,
            "/keyversion/alias%400/_eek?eek_op=decrypt",
            Some(&body)
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        alice
            .call(
                &gw,
                Method::POST,
                "/keyversion/alias%400/_eek?eek_op=decrypt",
                Some(&body)
            )
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // Reload: the file changes, the gateway follows within a few seconds.
    let path = gw.dir.path().join("kms-acls.xml");
    std::fs::write(
        &path,
        ACLS.replace(
            "<value>admin,alice</value>",
            "<value>admin,alice,hdfs</value>",
        ),
    )
    .unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(2))
        .unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if hdfs
            .call(&gw, Method::GET, "/keys/names", None)
            .await
            .status
            == StatusCode::OK
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "the ACL file change was not picked up");

    // The audit log recorded the denials and successes in Hadoop's format.
    gw.gw.audit.flush();
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(
        log.contains("UNAUTHORIZED[op=CREATE_KEY, key=k, user=alice] "),
        "{log}"
    );
    assert!(
        log.contains(
            "OK[op=CREATE_KEY, key=k, user=admin] UserProvidedMaterial:false Description:null"
        ),
        "{log}"
    );
    assert!(
        log.contains("OK[op=GENERATE_EEK, key=k, user=hdfs, accessCount=1, interval=0ms] "),
        "{log}"
    );
    assert!(
        log.contains("UNAUTHORIZED[op=DECRYPT_EEK, key=k, user=hdfs] "),
        "{log}"
    );
    assert!(
        log.contains("UNAUTHORIZED[op=GET_KEYS, user=hdfs] "),
        "{log}"
    );
}

#[tokio::test]
async fn no_acl_for_create_without_default_key_acl() {
    let env = Env::new().await;
    let gw = env
        .gateway("127.0.0.1", |c, dir| {
            std::fs::write(dir.join("a.xml"), "<configuration/>").unwrap();
            c.acl_file = Some(dir.join("a.xml"));
        })
        .await;
    let r = Caller::new("alice")
        .call(&gw, Method::POST, "/keys", Some(r#"{"name":"k"}"#))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.message(),
        "User [alice] is not authorized to create key !!"
    );
}

#[tokio::test]
async fn proxy_users() {
    let env = Env::new().await;
    let gw = env
        .gateway("127.0.0.1", |c, _| {
            c.proxyuser.insert(
                "oozie".into(),
                keysafe_kms::config::ProxyUserConfig {
                    users: Some("alice".into()),
                    groups: None,
                    hosts: Some("127.0.0.1".into()),
                },
            );
            c.proxyuser.insert(
                "remote".into(),
                keysafe_kms::config::ProxyUserConfig {
                    users: Some("*".into()),
                    groups: None,
                    hosts: Some("10.0.0.0/8".into()),
                },
            );
        })
        .await;
    let mut oozie = Caller::new("oozie");
    // The handshake itself carries doAs (captured client behaviour).
    let r = oozie
        .raw(
            Method::OPTIONS,
            &format!("{}/keys/names?doAs=alice&user.name=oozie", gw.base),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    oozie.cookie = set_cookie(&r.headers);
    let r = oozie
        .call(
            &gw,
            Method::POST,
            "/keys?doAs=alice",
            Some(r#"{"name":"k"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // doAs matched case-insensitively; the audit shows the proxied user.
    let r = oozie
        .call(&gw, Method::GET, "/keys/names?DOAS=alice", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = oozie
        .call(&gw, Method::GET, "/keys/names?doAs=bob", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.exception(), AUTHZ);
    assert_eq!(r.message(), "User: oozie is not allowed to impersonate bob");
    // alice may not impersonate anyone.
    let r = Caller::new("alice")
        .call(&gw, Method::GET, "/keys/names?doAs=oozie", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Host rule.
    let r = Caller::new("remote")
        .call(&gw, Method::GET, "/keys/names?doAs=alice", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.message()
            .contains("Unauthorized connection for super-user: remote")
    );
    // A token asked for with doAs belongs to the proxied user, with the proxy as real user.
    let r = oozie
        .call(
            &gw,
            Method::GET,
            "/?op=GETDELEGATIONTOKEN&renewer=yarn&doAs=alice",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t = keysafe_kms::token::Token::decode_url_string(
        r.json()["Token"]["urlString"].as_str().unwrap(),
    )
    .unwrap();
    let id = keysafe_kms::token::TokenIdent::decode(&t.identifier).unwrap();
    assert_eq!(
        (
            id.owner.as_str(),
            id.real_user.as_str(),
            id.renewer.as_str()
        ),
        ("alice", "oozie", "yarn")
    );
    // Without renewer, the renewer is the caller.
    let r = oozie
        .call(&gw, Method::GET, "/?op=GETDELEGATIONTOKEN", None)
        .await;
    let t = keysafe_kms::token::Token::decode_url_string(
        r.json()["Token"]["urlString"].as_str().unwrap(),
    )
    .unwrap();
    let id = keysafe_kms::token::TokenIdent::decode(&t.identifier).unwrap();
    assert_eq!(
        (
            id.owner.as_str(),
            id.real_user.as_str(),
            id.renewer.as_str()
        ),
        ("oozie", "", "oozie")
    );
    // A refused impersonation gets no token.
    let r = oozie
        .call(
            &gw,
            Method::GET,
            "/?op=GETDELEGATIONTOKEN&renewer=yarn&doAs=bob",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    gw.gw.audit.flush();
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(
        log.contains("OK[op=CREATE_KEY, key=k, user=alice] "),
        "{log}"
    );
}

/// Every endpoint against every operation ACL type: denying exactly one type to "u" refuses
/// exactly the endpoints Hadoop guards with it (403, nothing changed) and no other.
#[tokio::test]
async fn each_operation_acl_guards_exactly_its_endpoints() {
    let env = Env::new().await;
    // Set up a key and an EEK with everything allowed.
    let open = env.gateway("127.0.0.1", |_, _| {}).await;
    let mut admin = Caller::new("admin");
    admin
        .call(&open, Method::POST, "/keys", Some(r#"{"name":"k"}"#))
        .await;
    let e = admin
        .call(&open, Method::GET, "/key/k/_eek?eek_op=generate", None)
        .await
        .json()[0]
        .clone();
    let dec = json!({"name":"k","iv":e["iv"],"material":e["encryptedKeyVersion"]["material"]})
        .to_string();
    let batch = json!([{"versionName":"k@0","iv":e["iv"],"encryptedKeyVersion":{"material":e["encryptedKeyVersion"]["material"],"name":null,"versionName":"EEK"}}]).to_string();
    let mat = r#"{"material":"MDEyMzQ1Njc4OWFiY2RlZg=="}"#;
    let mat_create = r#"{"name":"m","length":128,"material":"MDEyMzQ1Njc4OWFiY2RlZg=="}"#;
    // (op type, method, path, body). Creating/deleting/rolling run last so they do not disturb.
    let endpoints: Vec<(&str, Method, &str, Option<&str>)> = vec![
        ("GET_KEYS", Method::GET, "/keys/names", None),
        ("GET_METADATA", Method::GET, "/key/k", None),
        ("GET_METADATA", Method::GET, "/key/k/_metadata", None),
        ("GET_METADATA", Method::GET, "/keys/metadata?key=k", None),
        ("GET", Method::GET, "/key/k/_currentversion", None),
        ("GET", Method::GET, "/keyversion/k%400", None),
        ("GET", Method::GET, "/key/k/_versions", None),
        (
            "GENERATE_EEK",
            Method::GET,
            "/key/k/_eek?eek_op=generate",
            None,
        ),
        (
            "GENERATE_EEK",
            Method::POST,
            "/keyversion/k%400/_eek?eek_op=reencrypt",
            Some(&dec),
        ),
        (
            "GENERATE_EEK",
            Method::POST,
            "/key/k/_reencryptbatch",
            Some(&batch),
        ),
        (
            "DECRYPT_EEK",
            Method::POST,
            "/keyversion/k%400/_eek?eek_op=decrypt",
            Some(&dec),
        ),
        ("ROLLOVER", Method::POST, "/key/k/_invalidatecache", None),
        (
            "SET_KEY_MATERIAL|ROLLOVER",
            Method::POST,
            "/key/k",
            Some(mat),
        ),
        ("ROLLOVER", Method::POST, "/key/k", Some("{}")),
        (
            "SET_KEY_MATERIAL|CREATE",
            Method::POST,
            "/keys",
            Some(mat_create),
        ),
        ("CREATE", Method::POST, "/keys", Some(r#"{"name":"n"}"#)),
        ("DELETE", Method::DELETE, "/key/n", None),
    ];
    for denied in [
        "CREATE",
        "DELETE",
        "ROLLOVER",
        "GET",
        "GET_KEYS",
        "GET_METADATA",
        "SET_KEY_MATERIAL",
        "GENERATE_EEK",
        "DECRYPT_EEK",
    ] {
        let gw = env
            .gateway("127.0.0.1", |c, dir| {
                let xml = format!(
                    "<configuration><property><name>hadoop.kms.acl.{denied}</name><value>nobody</value></property>\
                     <property><name>default.key.acl.MANAGEMENT</name><value>*</value></property>\
                     <property><name>default.key.acl.READ</name><value>*</value></property>\
                     <property><name>default.key.acl.GENERATE_EEK</name><value>*</value></property>\
                     <property><name>default.key.acl.DECRYPT_EEK</name><value>*</value></property></configuration>"
                );
                std::fs::write(dir.join("acls.xml"), xml).unwrap();
                c.acl_file = Some(dir.join("acls.xml"));
            })
            .await;
        let mut u = Caller::new("u");
        for (op, m, p, body) in &endpoints {
            let r = u.call(&gw, m.clone(), p, *body).await;
            if op.split('|').any(|o| o == denied) {
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{denied}: {m} {p}: {}",
                    r.text
                );
                assert_eq!(r.exception(), AUTHZ);
            } else if denied == "CREATE" && *p == "/key/n" {
                // "n" was not created in this round: the delete fails, but not on an ACL.
                assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
            } else {
                assert!(
                    r.status.is_success(),
                    "{denied}: {m} {p}: {} {}",
                    r.status,
                    r.text
                );
            }
        }
        // Put the shared key back as it was for the next round.
        admin.call(&open, Method::DELETE, "/key/n", None).await;
        admin.call(&open, Method::DELETE, "/key/m", None).await;
    }
}

/// Every endpoint against every key ACL operation: a key whose ACL lacks exactly one operation.
#[tokio::test]
async fn each_key_acl_guards_exactly_its_endpoints() {
    let env = Env::new().await;
    let open = env.gateway("127.0.0.1", |_, _| {}).await;
    let mut admin = Caller::new("admin");
    for kop in ["MANAGEMENT", "READ", "GENERATE_EEK", "DECRYPT_EEK"] {
        let gw = env
            .gateway("127.0.0.1", |c, dir| {
                let mut xml = String::from("<configuration>");
                for o in ["MANAGEMENT", "READ", "GENERATE_EEK", "DECRYPT_EEK"] {
                    let v = if o == kop { "nobody" } else { "*" };
                    xml.push_str(&format!(
                        "<property><name>key.acl.k.{o}</name><value>{v}</value></property>\
                         <property><name>key.acl.n.{o}</name><value>{v}</value></property>"
                    ));
                }
                xml.push_str("</configuration>");
                std::fs::write(dir.join("acls.xml"), xml).unwrap();
                c.acl_file = Some(dir.join("acls.xml"));
            })
            .await;
        admin
            .call(
                &open,
                Method::POST,
                "/keys",
                Some(r#"{"name":"k","attributes":{"key.acl.name":"k"}}"#),
            )
            .await;
        let e = admin
            .call(&open, Method::GET, "/key/k/_eek?eek_op=generate", None)
            .await
            .json()[0]
            .clone();
        let dec = json!({"name":"k","iv":e["iv"],"material":e["encryptedKeyVersion"]["material"]})
            .to_string();
        let batch = json!([{"versionName":"k@0","iv":e["iv"],"encryptedKeyVersion":{"material":e["encryptedKeyVersion"]["material"],"name":null,"versionName":"EEK"}}]).to_string();
        let endpoints: Vec<(&str, Method, &str, Option<&str>)> = vec![
            ("", Method::GET, "/keys/names", None),
            ("READ", Method::GET, "/key/k/_metadata", None),
            ("READ", Method::GET, "/keys/metadata?key=k", None),
            ("READ", Method::GET, "/key/k/_currentversion", None),
            ("READ", Method::GET, "/keyversion/k%400", None),
            ("READ", Method::GET, "/key/k/_versions", None),
            (
                "GENERATE_EEK",
                Method::GET,
                "/key/k/_eek?eek_op=generate",
                None,
            ),
            (
                "GENERATE_EEK",
                Method::POST,
                "/keyversion/k%400/_eek?eek_op=reencrypt",
                Some(&dec),
            ),
            (
                "GENERATE_EEK",
                Method::POST,
                "/key/k/_reencryptbatch",
                Some(&batch),
            ),
            (
                "DECRYPT_EEK",
                Method::POST,
                "/keyversion/k%400/_eek?eek_op=decrypt",
                Some(&dec),
            ),
            ("MANAGEMENT", Method::POST, "/key/k/_invalidatecache", None),
            ("MANAGEMENT", Method::POST, "/key/k", Some("{}")),
            ("MANAGEMENT", Method::POST, "/keys", Some(r#"{"name":"n"}"#)),
            ("MANAGEMENT", Method::DELETE, "/key/k", None),
        ];
        let mut u = Caller::new("u");
        for (op, m, p, body) in &endpoints {
            let r = u.call(&gw, m.clone(), p, *body).await;
            if *op == kop {
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{kop}: {m} {p}: {}",
                    r.text
                );
                assert_eq!(r.exception(), AUTHZ);
            } else {
                assert!(
                    r.status.is_success(),
                    "{kop}: {m} {p}: {} {}",
                    r.status,
                    r.text
                );
            }
        }
        admin.call(&open, Method::DELETE, "/key/k", None).await;
        admin.call(&open, Method::DELETE, "/key/n", None).await;
    }
}

/// The authentication extension point: a two-round scheme (shaped like SPNEGO) plugged in as
/// the gateway's authenticator; cookies then work as for pseudo authentication.
#[tokio::test]
async fn a_multi_round_authenticator_plugs_in() {
    use keysafe_kms::auth::{AuthRequest, AuthStep, HttpAuthenticator};
    use keysafe_kms::error::KmsResult;
    struct TwoRound;
    #[async_trait::async_trait]
    impl HttpAuthenticator for TwoRound {
        fn token_type(&self) -> &'static str {
            "test-dt"
        }
        fn challenge(&self) -> &'static str {
            "Test"
        }
        async fn authenticate(&self, req: &AuthRequest<'_>) -> KmsResult<AuthStep> {
            let hv = |s: &str| http::HeaderValue::from_str(s).unwrap();
            Ok(
                match req
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                {
                    Some("Test round1") => AuthStep::Continue {
                        headers: vec![(http::header::WWW_AUTHENTICATE, hv("Test round2"))],
                    },
                    Some(s) if s.starts_with("Test final ") => AuthStep::User {
                        user: s["Test final ".len()..].to_owned(),
                        principal: None,
                        headers: vec![(http::header::WWW_AUTHENTICATE, hv("Test done"))],
                    },
                    _ => AuthStep::None,
                },
            )
        }
    }
    let env = Env::new().await;
    let gw = keysafe_kms::Gateway::with_authenticator(
        std::sync::Arc::new(
            keysafe_kms::deposits::DepositBackend::open(
                &env.client.home,
                env.client.client.clone(),
                "kms",
                None,
            )
            .await
            .unwrap(),
        ),
        &keysafe_kms::KmsConfig {
            audit_log: None,
            key_admins: "*".into(),
            ..Default::default()
        },
        Box::new(TwoRound),
    )
    .await
    .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/kms/v1", l.local_addr().unwrap());
    tokio::spawn(keysafe_kms::server::serve(l, gw, std::future::pending()));
    let h = http();
    let url = format!("{base}/keys/names");
    let r = h.request(Method::OPTIONS, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Test");
    // user.name means nothing to this scheme.
    let r = h
        .request(Method::OPTIONS, format!("{url}?user.name=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = h
        .request(Method::OPTIONS, &url)
        .header("authorization", "Test round1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Test round2");
    let r = h
        .request(Method::OPTIONS, &url)
        .header("authorization", "Test final alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["www-authenticate"], "Test done");
    let cookie = set_cookie(r.headers()).unwrap();
    assert!(cookie.contains("t=test-dt"), "{cookie}");
    let r = h.get(&url).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
