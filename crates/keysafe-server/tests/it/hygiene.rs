//! Answers stay well-formed whatever the request looks like: path parameters that do not decode
//! get the JSON error (never axum's plain text), versions must be canonical, and nothing a
//! client chooses becomes a metric label.

use keysafe_client::reqwest::Method;
use keysafe_proto::{ErrorBody, ErrorCode};
use keysafe_testkit::TestServer;

async fn expect_json(r: keysafe_client::reqwest::Response, code: ErrorCode, what: &str) {
    assert_eq!(r.status().as_u16(), code.http_status(), "{what}");
    assert_eq!(
        r.headers().get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{what}"
    );
    let body: ErrorBody = r.json().await.unwrap();
    assert_eq!(body.error.code, code, "{what}");
    assert!(body.error.request_id.is_some(), "{what}");
}

#[tokio::test]
async fn invalid_utf8_in_paths_gets_the_json_error() {
    let ts = TestServer::start().await;
    let c = ts.new_client("acme").await;
    for (method, path) in [
        (Method::GET, "/v1/deposits/%ff"),
        (Method::PUT, "/v1/deposits/%ff"),
        (Method::DELETE, "/v1/deposits/%c3%28"),
        (Method::POST, "/v1/deposits/%ff:undelete"),
        (Method::GET, "/v1/groups/%ff"),
        (Method::GET, "/v1/groups/%fe/keys"),
        (Method::POST, "/v1/groups/%ff/admit"),
    ] {
        let r = c
            .client
            .raw_request(method.clone(), path)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        expect_json(r, ErrorCode::BadRequest, &format!("{method} {path}")).await;
    }
    for (method, path) in [
        (Method::GET, "/v1/admin/groups/acme/%ff"),
        (Method::GET, "/v1/admin/groups/%ff/g"),
        (Method::PUT, "/v1/admin/orgs/%ff/auth"),
        (Method::POST, "/v1/admin/orgs/%ff/tokens"),
        (Method::POST, "/v1/admin/clients/%ff/approve"),
        (Method::POST, "/v1/admin/groups/acme/%ff/add-member"),
    ] {
        let r = ts
            .admin
            .raw_request(method.clone(), path)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        expect_json(r, ErrorCode::BadRequest, &format!("{method} {path}")).await;
    }
}

#[tokio::test]
async fn versions_must_be_canonical() {
    let ts = TestServer::start().await;
    let c = ts.new_client("acme").await;
    let r = c
        .client
        .raw_request(Method::PUT, "/v1/deposits/k")
        .body("v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    for v in ["\"+1\"", "+1", "W/\"+1\"", "\"01\"", "\" 1\"", "\"1 \""] {
        let r = c
            .client
            .raw_request(Method::PUT, "/v1/deposits/k")
            .header("if-match", v)
            .body("v2")
            .send()
            .await
            .unwrap();
        expect_json(r, ErrorCode::BadRequest, &format!("If-Match: {v}")).await;
    }
    for q in ["%2B1", "01", "+1"] {
        let r = c
            .client
            .raw_request(Method::GET, &format!("/v1/deposits/k?version={q}"))
            .send()
            .await
            .unwrap();
        expect_json(r, ErrorCode::BadRequest, &format!("?version={q}")).await;
    }
    // The canonical forms still work, and nothing above wrote a version.
    let r = c
        .client
        .raw_request(Method::PUT, "/v1/deposits/k")
        .header("if-match", "\"1\"")
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let put: keysafe_proto::api::PutResponse = r.json().await.unwrap();
    assert_eq!(put.version.get(), 2);
}

#[tokio::test]
async fn client_chosen_methods_and_paths_never_become_metric_labels() {
    let ts = TestServer::start().await;
    let c = ts.new_client("acme").await;
    let unique_method = "ZQXMETHOD";
    let unique_path = "/zqx-unmatched-path-7731";
    for (m, p) in [
        (unique_method, "/v1/health"),
        (unique_method, "/v1/deposits/k"),
        (unique_method, unique_path),
        ("GET", unique_path),
        ("PATCH", unique_path),
    ] {
        let r = c
            .client
            .raw_request(Method::from_bytes(m.as_bytes()).unwrap(), p)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{m} {p}");
    }
    let text = keysafe_server::metrics::render(&ts.app.state).await;
    assert!(!text.contains(unique_method), "a method became a label");
    assert!(!text.contains("zqx-unmatched"), "a path became a label");
    assert!(
        !text.contains("PATCH"),
        "methods outside the fixed set are OTHER"
    );
    assert!(text.contains("operation=\"OTHER /v1/health\""), "{text}");
    assert!(text.contains("operation=\"GET -\""));
    assert!(text.contains("operation=\"OTHER -\""));
}
