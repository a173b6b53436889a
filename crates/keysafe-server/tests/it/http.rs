//! HTTP conventions: JSON errors everywhere, request ids, no caching, documented codes.

use keysafe_client::reqwest::Method;
use keysafe_proto::{ErrorBody, ErrorCode};
use keysafe_testkit::TestServer;

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let ts = TestServer::start().await;
    let c = ts.new_client("acme").await;
    for (method, path, code) in [
        (Method::GET, "/nope", ErrorCode::NoRoute),
        (Method::GET, "/", ErrorCode::NoRoute),
        (Method::PATCH, "/v1/deposits", ErrorCode::MethodNotAllowed),
        (Method::GET, "/v1/deposits/k:frobnicate", ErrorCode::NoRoute),
        (Method::POST, "/v1/deposits/k", ErrorCode::MethodNotAllowed),
        (Method::POST, "/v1/register", ErrorCode::BadRequest),
    ] {
        let r = c
            .client
            .raw_request(method.clone(), path)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code.http_status(), "{method} {path}");
        assert_eq!(
            r.headers().get("content-type").unwrap(),
            "application/json",
            "{method} {path}"
        );
        let id = r
            .headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let body: ErrorBody = r.json().await.unwrap();
        assert_eq!(body.error.code, code, "{method} {path}");
        assert_eq!(body.error.request_id.as_deref(), Some(id.as_str()));
    }
}

#[tokio::test]
async fn responses_are_not_cacheable_and_carry_request_ids() {
    let ts = TestServer::start().await;
    let c = ts.new_client("acme").await;
    let r = c
        .client
        .raw_request(Method::PUT, "/v1/deposits/k")
        .header("x-request-id", "my-trace-123")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    assert_eq!(r.headers().get("x-request-id").unwrap(), "my-trace-123");
    assert_eq!(r.headers().get("x-keysafe-version").unwrap(), "1");
    assert!(
        r.headers().get("etag").is_none(),
        "only a GET's ETag names the bytes served"
    );
    let r = c
        .client
        .raw_request(Method::PUT, "/v1/deposits/k")
        .body("w")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "a new version of an existing deposit is 200"
    );
    let r = c
        .client
        .raw_request(Method::GET, "/v1/deposits/k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "application/octet-stream"
    );
    assert_eq!(r.headers().get("x-keysafe-version").unwrap(), "2");
    // A malformed incoming id is replaced, not echoed.
    let r = c
        .client
        .raw_request(Method::GET, "/v1/deposits/k")
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(
        r.headers().get("x-request-id").unwrap(),
        "bad id with spaces"
    );
}

#[tokio::test]
async fn every_error_code_is_documented() {
    let api = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"))
        .expect("docs/api.md exists");
    for code in ErrorCode::ALL {
        assert!(
            api.contains(&format!("`{}`", code.as_str())),
            "docs/api.md lacks `{code}`"
        );
    }
}

#[tokio::test]
async fn graceful_stop_finishes() {
    let ts = TestServer::start().await;
    let c = ts.new_client("acme").await;
    c.client.whoami().await.unwrap();
    let url = ts.url.clone();
    ts.stop().await;
    let again = keysafe_client::KeysafeClient::new(
        &url,
        None,
        &keysafe_client::ServerTrust::TrustOnFirstUse,
        &Default::default(),
    )
    .unwrap();
    assert!(matches!(
        again.health().await,
        Err(keysafe_client::ClientError::Connect { .. })
    ));
}
