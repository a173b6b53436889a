//! The key lifecycle: create (from Jackson's pretty-printed body), names and metadata (one key
//! or a batch), the current version and key versions, rolls with and without caller material,
//! cache invalidation, delete and re-create, `{}` or `[]` for missing keys, and key names that
//! are not deposit names.

use super::{std_b64, unb64};
use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

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
