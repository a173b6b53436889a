//! Error paths: each malformed or impossible request is answered with Hadoop's status,
//! RemoteException class and message, and changes nothing.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

const IO: &str = "java.io.IOException";
const IAE: &str = "java.lang.IllegalArgumentException";

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
