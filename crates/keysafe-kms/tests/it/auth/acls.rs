//! Authorisation from kms-acls.xml: operation ACLs and blacklists, default and per-key ACLs, the
//! `key.acl.name` attribute, creation without a default key ACL, reloading a changed file, and
//! the audit lines of denials and successes; then every endpoint against every operation ACL
//! type and every key ACL operation.

use super::AUTHZ;
use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

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
