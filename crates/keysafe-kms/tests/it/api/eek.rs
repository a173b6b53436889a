//! Encrypted key operations: the spec's EEK vectors decrypted from either base64 alphabet,
//! generated EEKs checked independently, re-encryption after a roll (one and a batch).

use super::{std_b64, unb64};
use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}
fn url_b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
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
