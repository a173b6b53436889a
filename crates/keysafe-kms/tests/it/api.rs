//! Every endpoint and error path of the v1 API, over a real keysafe server.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const IO: &str = "java.io.IOException";
const IAE: &str = "java.lang.IllegalArgumentException";

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}
fn std_b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
fn url_b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[tokio::test]
async fn key_lifecycle() {
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |_, _| {}).await;
    let mut c = Caller::new("alice");

    // Create with Jackson's pretty-printed body.
    let r = c
        .call(
            &gw,
            Method::POST,
            "/keys",
            Some("{\n  \"cipher\" : \"AES/CTR/NoPadding\",\n  \"name\" : \"ks1\",\n  \"length\" : 256,\n  \"description\" : \"hello\",\n  \"attributes\" : {\n    \"a\" : \"1\"\n  }\n}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let loc = r.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(loc, format!("http://{}/kms/v1/key/ks1", gw.addr));
    let j = r.json();
    assert_eq!(j["name"], "ks1");
    assert_eq!(j["versionName"], "ks1@0");
    let m0 = unb64(j["material"].as_str().unwrap());
    assert_eq!(m0.len(), 32);
    assert!(!j["material"].as_str().unwrap().contains('='));

    // Names and metadata.
    let r = c.call(&gw, Method::GET, "/keys/names", None).await;
    assert_eq!(r.json(), json!(["ks1"]));
    let r = c.call(&gw, Method::GET, "/key/ks1/_metadata", None).await;
    let md = r.json();
    assert_eq!(md["name"], "ks1");
    assert_eq!(md["cipher"], "AES/CTR/NoPadding");
    assert_eq!(md["length"], 256);
    assert!(md["length"].is_i64());
    assert_eq!(md["description"], "hello");
    assert_eq!(md["versions"], 1);
    assert_eq!(md["attributes"]["a"], "1");
    // Default key ACLs apply, so the key ACL name is recorded, as Hadoop's KMS does.
    assert_eq!(md["attributes"]["key.acl.name"], "ks1");
    let created = md["created"].as_i64().unwrap();
    assert!(created > i64::from(i32::MAX), "milliseconds, a Java Long");
    assert_eq!(c.call(&gw, Method::GET, "/key/ks1", None).await.json(), md);

    // Current version, key version (percent-encoded @), versions.
    let r = c
        .call(&gw, Method::GET, "/key/ks1/_currentversion", None)
        .await;
    assert_eq!(unb64(r.json()["material"].as_str().unwrap()), m0);
    let r = c.call(&gw, Method::GET, "/keyversion/ks1%400", None).await;
    assert_eq!(r.json()["versionName"], "ks1@0");

    // Roll with an empty body ({ }), then with caller material.
    let r = c.call(&gw, Method::POST, "/key/ks1", Some("{ }")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["versionName"], "ks1@1");
    let m1 = unb64(r.json()["material"].as_str().unwrap());
    assert_ne!(m0, m1);
    let mat = vec![9u8; 32];
    let r = c
        .call(
            &gw,
            Method::POST,
            "/key/ks1",
            Some(&json!({"material": std_b64(&mat)}).to_string()),
        )
        .await;
    assert_eq!(r.json()["versionName"], "ks1@2");
    assert_eq!(unb64(r.json()["material"].as_str().unwrap()), mat);
    let r = c
        .call(&gw, Method::POST, "/key/ks1/_invalidatecache", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.is_empty());
    let r = c.call(&gw, Method::GET, "/key/ks1/_versions", None).await;
    let vs: Vec<Value> = r.json().as_array().unwrap().clone();
    let names: Vec<&str> = vs
        .iter()
        .map(|v| v["versionName"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ks1@0", "ks1@1", "ks1@2"]);
    assert_eq!(unb64(vs[1]["material"].as_str().unwrap()), m1);
    let md = c
        .call(&gw, Method::GET, "/key/ks1/_metadata", None)
        .await
        .json();
    assert_eq!(md["versions"], 3);
    assert_eq!(
        md["created"].as_i64().unwrap(),
        created,
        "creation time kept over rolls"
    );

    // Batched metadata keeps the order and gives {} for a missing key.
    c.call(
        &gw,
        Method::POST,
        "/keys",
        Some(r#"{"name":"k2","cipher":"AES/CTR/NoPadding","length":128}"#),
    )
    .await;
    let r = c
        .call(
            &gw,
            Method::GET,
            "/keys/metadata?key=k2&key=nosuchkey&key=ks1",
            None,
        )
        .await;
    let arr = r.json();
    assert_eq!(arr[0]["name"], "k2");
    assert_eq!(arr[1], json!({}));
    assert_eq!(arr[2]["name"], "ks1");
    assert_eq!(arr[0]["length"], 128);

    // Missing keys: {} / [] answers.
    for p in [
        "/key/nope/_metadata",
        "/key/nope/_currentversion",
        "/keyversion/nope%400",
        "/keyversion/ks1%4099",
        "/keyversion/garbage",
    ] {
        let r = c.call(&gw, Method::GET, p, None).await;
        assert_eq!(r.status, StatusCode::OK, "{p}");
        assert_eq!(r.json(), json!({}), "{p}");
    }
    assert_eq!(
        c.call(&gw, Method::GET, "/key/nope/_versions", None)
            .await
            .json(),
        json!([])
    );

    // Delete, then the 3.5.0 client's _invalidatecache for the deleted key must be 200.
    let r = c.call(&gw, Method::DELETE, "/key/ks1", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c
        .call(&gw, Method::POST, "/key/ks1/_invalidatecache", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        c.call(&gw, Method::GET, "/keys/names", None).await.json(),
        json!(["k2"])
    );
    assert_eq!(
        c.call(&gw, Method::GET, "/key/ks1/_metadata", None)
            .await
            .json(),
        json!({})
    );
    // The name can be re-created, starting again at @0.
    let r = c
        .call(
            &gw,
            Method::POST,
            "/keys",
            Some(r#"{"name":"ks1","length":128}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["versionName"], "ks1@0");

    // Key names that are not deposit names, through the URL encoding Hadoop's client uses.
    let r = c
        .call(
            &gw,
            Method::POST,
            "/keys",
            Some(r#"{"name":"a.b/c d@e","length":128}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = c
        .call(&gw, Method::GET, "/key/a.b%2Fc+d%40e/_metadata", None)
        .await;
    // Jetty keeps '+' literally in a path: that is another key.
    assert_eq!(r.json(), json!({}));
    let r = c
        .call(&gw, Method::GET, "/key/a.b%2Fc%20d%40e/_metadata", None)
        .await;
    assert_eq!(r.json()["name"], "a.b/c d@e");
    let r = c
        .call(&gw, Method::GET, "/keyversion/a.b%2Fc%20d%40e%400", None)
        .await;
    assert_eq!(r.json()["name"], "a.b/c d@e");
    let names = c.call(&gw, Method::GET, "/keys/names", None).await.json();
    assert_eq!(names, json!(["a.b/c d@e", "k2", "ks1"]));
}

#[tokio::test]
async fn error_paths() {
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |_, _| {}).await;
    let mut c = Caller::new("alice");
    let ok = c
        .call(
            &gw,
            Method::POST,
            "/keys",
            Some(r#"{"name":"k","length":128}"#),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);

    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        StatusCode,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/keys",
            Some(r#"{"name":"k","length":128}"#),
            StatusCode::INTERNAL_SERVER_ERROR,
            IO,
            "Key k already exists in keysafe",
        ),
        (
            Method::POST,
            "/keys",
            Some(r#"{"name":"Upper"}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "Uppercase key names are unsupported: Upper",
        ),
        (
            Method::POST,
            "/keys",
            Some(r#"{"cipher":"x"}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "Parameter 'name' cannot be null",
        ),
        (
            Method::POST,
            "/keys",
            Some(r#"{"name":""}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "Parameter 'name' cannot be empty",
        ),
        (
            Method::POST,
            "/keys",
            Some("not json"),
            StatusCode::BAD_REQUEST,
            IAE,
            "",
        ),
        (
            Method::POST,
            "/keys",
            Some(r#"{"name":"m","length":256,"material":"MDEyMzQ1Njc4OWFiY2RlZg=="}"#),
            StatusCode::INTERNAL_SERVER_ERROR,
            IO,
            "Wrong key length. Required 256, but got 128",
        ),
        (
            Method::POST,
            "/keys",
            Some(r#"{"name":"m","length":100}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "",
        ),
        (
            Method::DELETE,
            "/key/nope",
            None,
            StatusCode::INTERNAL_SERVER_ERROR,
            IO,
            "Key nope does not exist in keysafe",
        ),
        (
            Method::POST,
            "/key/nope",
            Some("{}"),
            StatusCode::INTERNAL_SERVER_ERROR,
            IO,
            "Key nope not found",
        ),
        (
            Method::POST,
            "/key/k",
            Some(r#"{"material":"AAAA"}"#),
            StatusCode::INTERNAL_SERVER_ERROR,
            IO,
            "Wrong key length. Required 128, but got 24",
        ),
        (
            Method::GET,
            "/key/k/_eek",
            None,
            StatusCode::BAD_REQUEST,
            IAE,
            "Parameter 'eekOp' cannot be null",
        ),
        (
            Method::GET,
            "/key/k/_eek?eek_op=decrypt",
            None,
            StatusCode::BAD_REQUEST,
            IAE,
            "IllegalArgumentException Wrong eek_op value, it must be generate or decrypt",
        ),
        (
            Method::GET,
            "/key/k/_eek?eek_op=generate&num_keys=abc",
            None,
            StatusCode::BAD_REQUEST,
            IAE,
            "",
        ),
        (
            Method::GET,
            "/key/k/_eek?eek_op=generate&num_keys=0",
            None,
            StatusCode::BAD_REQUEST,
            IAE,
            "",
        ),
        (
            Method::GET,
            "/key/nope/_eek?eek_op=generate",
            None,
            StatusCode::INTERNAL_SERVER_ERROR,
            IO,
            "",
        ),
        (
            Method::POST,
            "/keyversion/k%400/_eek?eek_op=decrypt",
            Some(r#"{"name":"k","material":"AAAA"}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "Parameter 'iv' cannot be null",
        ),
        (
            Method::POST,
            "/keyversion/k%400/_eek?eek_op=decrypt",
            Some(r#"{"name":"k","iv":"AAAAAAAAAAAAAAAAAAAAAA"}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "Parameter 'material' cannot be null",
        ),
        (
            Method::POST,
            "/keyversion/k%400/_eek?eek_op=decrypt",
            Some(r#"{"name":"k","iv":"AAAA","material":"AAAA"}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "IV must be 16 bytes, got 3",
        ),
        (
            Method::POST,
            "/keyversion/k%400/_eek?eek_op=bogus",
            Some(r#"{"name":"k","iv":"AAAAAAAAAAAAAAAAAAAAAA","material":"AAAA"}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "",
        ),
        (
            Method::POST,
            "/keyversion/k%409/_eek?eek_op=decrypt",
            Some(r#"{"name":"k","iv":"AAAAAAAAAAAAAAAAAAAAAA","material":"AAAA"}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "'k@9' not found",
        ),
        (
            Method::POST,
            "/keyversion/k%400/_eek?eek_op=decrypt",
            Some(r#"{"name":"other","iv":"AAAAAAAAAAAAAAAAAAAAAA","material":"AAAA"}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "KeyVersion 'k@0' does not belong to the key 'other'",
        ),
        (
            Method::POST,
            "/keyversion/k%400/_eek?eek_op=decrypt",
            Some(r#"{"name":"k","iv":"!!!","material":"AAAA"}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "",
        ),
        (
            Method::POST,
            "/key/k/_reencryptbatch",
            Some(
                r#"[{"versionName":"other@0","iv":"AAAAAAAAAAAAAAAAAAAAAA","encryptedKeyVersion":{"material":"AAAA","name":null,"versionName":"EEK"}}]"#,
            ),
            StatusCode::BAD_REQUEST,
            IAE,
            "All EncryptedKeys must be under the given key name k",
        ),
        (
            Method::POST,
            "/key/k/_reencryptbatch",
            Some(r#"{"not":"a list"}"#),
            StatusCode::BAD_REQUEST,
            IAE,
            "",
        ),
        (
            Method::GET,
            "/nosuchthing",
            None,
            StatusCode::NOT_FOUND,
            IAE,
            "",
        ),
        (Method::PUT, "/keys", None, StatusCode::NOT_FOUND, IAE, ""),
    ];
    for (m, p, body, status, class, msg) in cases {
        let r = c.call(&gw, m.clone(), p, body).await;
        assert_eq!(r.status, status, "{m} {p}: {}", r.text);
        assert_eq!(r.exception(), class, "{m} {p}");
        if !msg.is_empty() {
            assert_eq!(r.message(), msg, "{m} {p}");
        }
    }
    // Nothing was changed by the failures.
    assert_eq!(
        c.call(&gw, Method::GET, "/keys/names", None).await.json(),
        json!(["k"])
    );
    assert_eq!(
        c.call(&gw, Method::GET, "/key/k/_metadata", None)
            .await
            .json()["versions"],
        1
    );
    // Unknown invalidatecache is fine.
    assert_eq!(
        c.call(&gw, Method::POST, "/key/nope/_invalidatecache", None)
            .await
            .status,
        StatusCode::OK
    );
}

/// The spec's EEK vectors through the wire: caller material, decrypt, re-encrypt, batch.
#[tokio::test]
async fn eek_operations() {
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |_, _| {}).await;
    let mut c = Caller::new("alice");
    let k = hex("000102030405060708090a0b0c0d0e0f");
    let r = c
        .call(&gw, Method::POST, "/keys", Some(&json!({"name":"v","cipher":"AES/CTR/NoPadding","length":128,"material":std_b64(&k)}).to_string()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // v128: decrypt with standard padded base64 in, URL-safe unpadded out.
    let body = json!({"name":"v","iv":std_b64(&hex("101112131415161718191a1b1c1d1e1f")),"material":std_b64(&hex("1bb233f33fdda7eb4355da74b404fd91"))}).to_string();
    let r = c
        .call(
            &gw,
            Method::POST,
            "/keyversion/v%400/_eek?eek_op=decrypt",
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = r.json();
    assert_eq!(j["versionName"], "EK");
    assert_eq!(j["name"], "v");
    assert_eq!(
        unb64(j["material"].as_str().unwrap()),
        hex("202122232425262728292a2b2c2d2e2f")
    );
    // The same with URL-safe input.
    let body2 =
        json!({"name":"v","iv":"EBESExQVFhcYGRobHB0eHw","material":"G7Iz8z_dp-tDVdp0tAT9kQ"})
            .to_string();
    let r = c
        .call(
            &gw,
            Method::POST,
            "/keyversion/v%400/_eek?eek_op=decrypt",
            Some(&body2),
        )
        .await;
    assert_eq!(
        unb64(r.json()["material"].as_str().unwrap()),
        hex("202122232425262728292a2b2c2d2e2f")
    );

    // Generate: num_keys items under v@0, each decrypting to a 16-byte DEK.
    let r = c
        .call(
            &gw,
            Method::GET,
            "/key/v/_eek?num_keys=3&eek_op=generate",
            None,
        )
        .await;
    let eeks = r.json().as_array().unwrap().clone();
    assert_eq!(eeks.len(), 3);
    let mut deks = vec![];
    for e in &eeks {
        assert_eq!(e["versionName"], "v@0");
        assert_eq!(e["encryptedKeyVersion"]["versionName"], "EEK");
        assert_eq!(e["encryptedKeyVersion"]["name"], "v");
        let iv = unb64(e["iv"].as_str().unwrap());
        let eek = unb64(e["encryptedKeyVersion"]["material"].as_str().unwrap());
        assert_eq!((iv.len(), eek.len()), (16, 16));
        let body = json!({"name":"v","iv":std_b64(&iv),"material":std_b64(&eek)}).to_string();
        let d = c
            .call(
                &gw,
                Method::POST,
                "/keyversion/v%400/_eek?eek_op=decrypt",
                Some(&body),
            )
            .await;
        let dek = unb64(d.json()["material"].as_str().unwrap());
        // Independently: AES-CTR(k, ~iv) of the DEK is the EEK.
        assert_eq!(
            keysafe_kms::crypto::eek_transform(&k, &iv, &dek)
                .unwrap()
                .to_vec(),
            eek
        );
        deks.push(dek);
    }
    assert_ne!(deks[0], deks[1]);
    // A big request (the client's cache size) is served whole.
    let r = c
        .call(
            &gw,
            Method::GET,
            "/key/v/_eek?num_keys=500&eek_op=generate",
            None,
        )
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 500);

    // Roll, then re-encrypt: same IV, new version, same DEK.
    c.call(&gw, Method::POST, "/key/v", Some("{}")).await;
    c.call(&gw, Method::POST, "/key/v/_invalidatecache", None)
        .await;
    let e = &eeks[0];
    let body = json!({"name":"v","iv":std_b64(&unb64(e["iv"].as_str().unwrap())),"material":std_b64(&unb64(e["encryptedKeyVersion"]["material"].as_str().unwrap()))}).to_string();
    let r = c
        .call(
            &gw,
            Method::POST,
            "/keyversion/v%400/_eek?eek_op=reencrypt",
            Some(&body),
        )
        .await;
    let re = r.json();
    assert_eq!(re["versionName"], "v@1");
    assert_eq!(re["iv"], e["iv"]);
    assert_eq!(re["encryptedKeyVersion"]["versionName"], "EEK");
    let body = json!({"name":"v","iv":re["iv"],"material":re["encryptedKeyVersion"]["material"]})
        .to_string();
    let d = c
        .call(
            &gw,
            Method::POST,
            "/keyversion/v%401/_eek?eek_op=decrypt",
            Some(&body),
        )
        .await;
    assert_eq!(unb64(d.json()["material"].as_str().unwrap()), deks[0]);
    // After the roll, generated EEKs are under v@1 (the queue was drained).
    let r = c
        .call(
            &gw,
            Method::GET,
            "/key/v/_eek?num_keys=5&eek_op=generate",
            None,
        )
        .await;
    assert!(
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["versionName"] == "v@1")
    );

    // Batch re-encrypt: URL-safe in, inner name null, order and size kept.
    let items: Vec<Value> = eeks
        .iter()
        .map(|e| json!({"versionName": e["versionName"], "iv": e["iv"], "encryptedKeyVersion": {"material": e["encryptedKeyVersion"]["material"], "name": null, "versionName": "EEK"}}))
        .collect();
    let r = c
        .call(
            &gw,
            Method::POST,
            "/key/v/_reencryptbatch",
            Some(&Value::Array(items).to_string()),
        )
        .await;
    let out = r.json().as_array().unwrap().clone();
    assert_eq!(out.len(), 3);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o["versionName"], "v@1");
        assert_eq!(o["iv"], eeks[i]["iv"]);
        let body = json!({"name":"v","iv":o["iv"],"material":o["encryptedKeyVersion"]["material"]})
            .to_string();
        let d = c
            .call(
                &gw,
                Method::POST,
                "/keyversion/v%401/_eek?eek_op=decrypt",
                Some(&body),
            )
            .await;
        assert_eq!(unb64(d.json()["material"].as_str().unwrap()), deks[i]);
    }
    let r = c
        .call(&gw, Method::POST, "/key/v/_reencryptbatch", Some("[]"))
        .await;
    assert_eq!(r.json(), json!([]));
    let _ = url_b64(&[]);
}

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
