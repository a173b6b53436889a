//! Several gateways over one keysafe organisation: they share keys (stored as age ciphertext in
//! deposits the group owns), cookies and EEKs, rolls through any of them never fork a key,
//! another gateway sees a roll once its current-version cache times out, and a gateway with its
//! own identity joins after one administrator step and a pinned group.

use super::unb64;
use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Two gateways over the same keysafe organisation: one's writes are the other's reads.
#[tokio::test]
async fn two_gateways_share_keys_and_never_fork() {
    let env = Env::new().await;
    let a = env.gateway("127.0.0.1", |_, _| {}).await;
    let b = env.gateway("127.0.0.2", |_, _| {}).await;
    let mut c = Caller::new("alice");
    c.call(
        &a,
        Method::POST,
        "/keys",
        Some(r#"{"name":"k","length":128}"#),
    )
    .await;
    let cur_b = c
        .call(&b, Method::GET, "/key/k/_currentversion", None)
        .await
        .json();
    assert_eq!(cur_b["versionName"], "k@0");
    // Roll on a; b serves its cached current version until its cache is invalidated
    // (as Hadoop's KMS, whose client broadcasts _invalidatecache after a roll).
    let r1 = c.call(&a, Method::POST, "/key/k", Some("{}")).await.json();
    assert_eq!(
        c.call(&b, Method::GET, "/key/k/_currentversion", None)
            .await
            .json()["versionName"],
        "k@0"
    );
    c.call(&b, Method::POST, "/key/k/_invalidatecache", None)
        .await;
    let cur = c
        .call(&b, Method::GET, "/key/k/_currentversion", None)
        .await
        .json();
    assert_eq!(cur, r1);
    // Rolling through b (whose view might be stale) appends after a's version: no fork.
    let (mut ca, mut cb) = (Caller::new("alice"), Caller::new("alice"));
    let (ra, rb) = tokio::join!(
        ca.call(&a, Method::POST, "/key/k", Some("{}")),
        cb.call(&b, Method::POST, "/key/k", Some("{}")),
    );
    let mut got = vec![
        ra.json()["versionName"].clone(),
        rb.json()["versionName"].clone(),
    ];
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, vec![json!("k@2"), json!("k@3")]);
    let vs = c
        .call(&a, Method::GET, "/key/k/_versions", None)
        .await
        .json();
    assert_eq!(vs.as_array().unwrap().len(), 4);
    // An EEK from a decrypts at b.
    let e = &c
        .call(&a, Method::GET, "/key/k/_eek?eek_op=generate", None)
        .await
        .json()[0];
    let vn = e["versionName"].as_str().unwrap().replace('@', "%40");
    let body = json!({"name":"k","iv":e["iv"],"material":e["encryptedKeyVersion"]["material"]})
        .to_string();
    let d1 = c
        .call(
            &a,
            Method::POST,
            &format!("/keyversion/{vn}/_eek?eek_op=decrypt"),
            Some(&body),
        )
        .await;
    let d2 = c
        .call(
            &b,
            Method::POST,
            &format!("/keyversion/{vn}/_eek?eek_op=decrypt"),
            Some(&body),
        )
        .await;
    assert_eq!(d1.json(), d2.json());
    // What is stored is a deposit owned by the group, named after the key, and keysafe holds
    // only age ciphertext of it: the key material is not in what the server returns.
    let list = env
        .client
        .client
        .list(&keysafe_proto::api::ListQuery {
            owner: Some("group:kms".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        list.deposits
            .iter()
            .any(|d| d.name.as_str() == "kms/keys/k")
    );
    assert!(
        env.client
            .client
            .list(&Default::default())
            .await
            .unwrap()
            .deposits
            .is_empty(),
        "nothing is owned by the gateway's own client"
    );
    let cur = c
        .call(&a, Method::GET, "/key/k/_currentversion", None)
        .await
        .json();
    let material = unb64(cur["material"].as_str().unwrap());
    let stored = env
        .client
        .client
        .get_of(
            Some("group:kms"),
            &keysafe_proto::DepositName::parse("kms/keys/k").unwrap(),
            None,
            keysafe_client::CacheUse::Refresh,
        )
        .await
        .unwrap();
    assert_eq!(stored.encoding.as_deref(), Some("age"));
    assert!(stored.payload.starts_with(b"age-encryption.org/v1"));
    let text = String::from_utf8_lossy(&stored.payload);
    assert!(!text.contains(cur["material"].as_str().unwrap()));
    assert!(
        !stored
            .payload
            .windows(material.len())
            .any(|w| w == material.as_slice())
    );
}

/// Without any invalidation, another gateway sees a rollover once its current-version cache
/// times out (here 1 s instead of Hadoop's 30 s); concurrent rolls through both never fork.
#[tokio::test]
async fn rollover_reaches_other_gateways_within_the_current_key_timeout() {
    let env = Env::new().await;
    let a = env.gateway("127.0.0.1", |_, _| {}).await;
    let b = env
        .gateway("127.0.0.2", |c, _| {
            c.cache.current_key_timeout = std::time::Duration::from_secs(1)
        })
        .await;
    let mut c = Caller::new("alice");
    c.call(&a, Method::POST, "/keys", Some(r#"{"name":"k"}"#))
        .await;
    let v = c
        .call(&b, Method::GET, "/key/k/_currentversion", None)
        .await
        .json();
    assert_eq!(v["versionName"], "k@0");
    c.call(&a, Method::POST, "/key/k", Some("{}")).await;
    let mut seen = false;
    for _ in 0..100 {
        let v = c
            .call(&b, Method::GET, "/key/k/_currentversion", None)
            .await
            .json();
        if v["versionName"] == "k@1" {
            seen = true;
            break;
        }
        assert_eq!(v["versionName"], "k@0");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "b never saw the rollover");

    // Six concurrent rollovers, alternating gateways: six distinct new versions, no fork.
    let mut callers: Vec<Caller> = (0..6).map(|_| Caller::new("alice")).collect();
    let futs = callers.iter_mut().enumerate().map(|(i, cl)| {
        let gw = if i % 2 == 0 { &a } else { &b };
        cl.call(gw, Method::POST, "/key/k", Some("{}"))
    });
    let rs = futures_util::future::join_all(futs).await;
    let mut got: Vec<String> = rs
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.json()["versionName"].as_str().unwrap().to_owned()
        })
        .collect();
    got.sort_by_key(|v| v[2..].parse::<u32>().unwrap());
    assert_eq!(got, (2..8).map(|n| format!("k@{n}")).collect::<Vec<_>>());
    c.call(&a, Method::POST, "/key/k/_invalidatecache", None)
        .await;
    let md = c
        .call(&a, Method::GET, "/key/k/_metadata", None)
        .await
        .json();
    assert_eq!(md["versions"], 8);
}

/// A second gateway with its own identity (no private key copied) joins with one administrator
/// step; the running gateway admits it; then it serves the same keys, cookies and tokens.
#[tokio::test]
async fn a_gateway_with_its_own_identity_joins_with_one_admin_step() {
    let env = Env::new().await;
    let a = env
        .gateway("127.0.0.1", |c, _| {
            c.admit_interval = std::time::Duration::from_millis(200)
        })
        .await;
    let mut c = Caller::new("alice");
    c.call(&a, Method::POST, "/keys", Some(r#"{"name":"k"}"#))
        .await;
    let second = env.server.new_client("hadoop").await;
    assert_ne!(second.fingerprint, env.client.fingerprint);
    // Not a member yet: refused, naming the administrator's command.
    let err = keysafe_kms::Gateway::new(&second.home, second.client.clone(), &Default::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!(
            "keysafe admin group add-member kms --org hadoop {}",
            second.fingerprint
        )),
        "{err}"
    );
    // The one administrator step.
    env.server
        .admin
        .admin_add_member(
            &env.client.org,
            &keysafe_proto::GroupName::parse("kms").unwrap(),
            &second.fingerprint,
        )
        .await
        .unwrap();
    // Admitted but without the group pinned, it cannot tell this group from one another
    // client made under the name: it refuses, printing the value to pin.
    let pin = a.gw.group_recipient.clone().unwrap();
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        keysafe_kms::Gateway::new(&second.home, second.client.clone(), &Default::default()),
    )
    .await
    .expect("the second gateway was never admitted")
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("group_recipient"), "{err}");
    assert!(
        err.contains(&pin),
        "the error names the value to check and pin: {err}"
    );
    // Pinned to another value: refused.
    let mut wrong = keysafe_kms::KmsConfig::default();
    wrong.keysafe.group_recipient =
        Some("age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq".into());
    let err = keysafe_kms::Gateway::new(&second.home, second.client.clone(), &wrong)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("was founded with the recipient"), "{err}");
    // With the pin the first gateway logged, it serves.
    let b = env
        .gateway_as(&second, "127.0.0.2", |c, _| {
            c.keysafe.group_recipient = Some(pin.clone())
        })
        .await;
    let va = c
        .call(&a, Method::GET, "/key/k/_currentversion", None)
        .await
        .json();
    let vb = c
        .call(&b, Method::GET, "/key/k/_currentversion", None)
        .await
        .json();
    assert_eq!(va, vb);
    assert_eq!(vb["versionName"], "k@0");
    // The cookie from a (shared secret) works at b without a new handshake.
    let r = c
        .raw(Method::GET, &format!("{}/keys/names", b.base), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get("set-cookie").is_none());
    // A roll through b is a roll of the same key.
    let r = c.call(&b, Method::POST, "/key/k", Some("{}")).await;
    assert_eq!(r.json()["versionName"], "k@1");
    c.call(&a, Method::POST, "/key/k/_invalidatecache", None)
        .await;
    let va = c
        .call(&a, Method::GET, "/key/k/_currentversion", None)
        .await
        .json();
    assert_eq!(va, r.json());
}
