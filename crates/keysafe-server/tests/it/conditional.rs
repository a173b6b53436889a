//! Conditional reads of a deposit: a strong `ETag` that names exactly the bytes and headers
//! served, `If-None-Match` answered `304` without the payload, and only after every check a full
//! read makes (a revoked grantee, a stranger, a deleted deposit never hear "not modified").

use keysafe_client::reqwest::{Method, Response, StatusCode};
use keysafe_client::vault::Vault;
use keysafe_client::{KeysafeClient, Precondition};
use keysafe_proto::DepositName;
use keysafe_proto::api::{Access, AclChange};
use keysafe_testkit::TestServer;
use std::time::Duration;

fn name(s: &str) -> DepositName {
    DepositName::parse(s).unwrap()
}

async fn get(c: &KeysafeClient, path: &str, inm: Option<&str>) -> Response {
    let mut rb = c.raw_request(Method::GET, path);
    if let Some(v) = inm {
        rb = rb.header("if-none-match", v);
    }
    rb.send().await.unwrap()
}

fn etag(r: &Response) -> String {
    r.headers()
        .get("etag")
        .expect("a GET carries an ETag")
        .to_str()
        .unwrap()
        .to_owned()
}

async fn acl(v: &Vault, n: &str, change: AclChange) {
    v.change_acl(None, &name(n), change, &|_, _| {})
        .await
        .unwrap();
}

async fn code_of(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn if_none_match_is_answered_304_only_after_every_access_check() {
    let ts = TestServer::start().await;
    let a = ts.new_client("acme").await;
    let b = ts.new_client("acme").await;
    let stranger = ts.new_client("acme").await;
    let va = a.vault();
    va.put(None, &name("db/key"), b"v1-secret", Precondition::None)
        .await
        .unwrap();
    let path = "/v1/deposits/db/key";

    let full = get(&a.client, path, None).await;
    assert_eq!(full.status(), StatusCode::OK);
    let t1 = etag(&full);
    assert!(t1.starts_with("\"1-") && t1.len() == 1 + 2 + 32 + 1, "{t1}");
    assert!(!full.bytes().await.unwrap().is_empty());

    // The same tag again: 304, no body, the same headers a full answer carries.
    let r = get(&a.client, path, Some(&t1)).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag(&r), t1);
    assert_eq!(r.headers()["x-keysafe-version"], "1");
    assert_eq!(r.headers()["x-keysafe-encoding"], "age");
    assert_eq!(r.headers()["x-keysafe-acl-serial"], "0");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.bytes().await.unwrap().is_empty());
    // Weak comparison, lists, `*`, and a version asked for explicitly.
    let weak = format!("W/{t1}");
    let list = format!("\"1-00000000000000000000000000000000\", {t1}");
    for inm in [weak.as_str(), list.as_str(), "*"] {
        let r = get(&a.client, path, Some(inm)).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{inm}");
    }
    let r = get(&a.client, &format!("{path}?version=1"), Some(&t1)).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // A tag that is not this version's is a full answer; a malformed header is refused.
    let r = get(&a.client, path, Some("\"1-0123\"")).await;
    assert_eq!(r.status(), StatusCode::OK);
    for bad in ["1", "\"unterminated", ""] {
        let (status, code) = code_of(get(&a.client, path, Some(bad)).await).await;
        assert_eq!(
            (status.as_u16(), code.as_str()),
            (400, "bad_request"),
            "{bad:?}"
        );
    }

    // Granting re-encrypts the version: the old tag no longer matches.
    acl(
        &va,
        "db/key",
        AclChange::Grant {
            grantee: b.fingerprint.as_str().to_owned(),
            access: Access::Read,
        },
    )
    .await;
    let r = get(&a.client, path, Some(&t1)).await;
    assert_eq!(r.status(), StatusCode::OK, "stale after an ACL change");
    let t2 = etag(&r);
    assert_ne!(t1, t2);
    assert_eq!(r.headers()["x-keysafe-acl-serial"], "1");
    // The grantee is told its copy is current ...
    let shared = format!("{path}?owner={}", a.fingerprint);
    let r = get(&b.client, &shared, Some(&t2)).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // ... a stranger holding the tag is not: no such deposit, as for any other read.
    let (status, code) = code_of(get(&stranger.client, &shared, Some(&t2)).await).await;
    assert_eq!((status.as_u16(), code.as_str()), (404, "not_found"));
    let (status, _) = code_of(get(&stranger.client, &shared, Some("*")).await).await;
    assert_eq!(status.as_u16(), 404);

    // Revoked: the grantee's current tag gets 404, never 304.
    acl(
        &va,
        "db/key",
        AclChange::Revoke {
            grantee: b.fingerprint.as_str().to_owned(),
        },
    )
    .await;
    let (status, code) = code_of(get(&b.client, &shared, Some(&t2)).await).await;
    assert_eq!((status.as_u16(), code.as_str()), (404, "not_found"));

    // A new version: the old tag gets the new one in full.
    let t3 = etag(&get(&a.client, path, None).await);
    va.put(None, &name("db/key"), b"v2-secret", Precondition::None)
        .await
        .unwrap();
    let r = get(&a.client, path, Some(&t3)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-keysafe-version"], "2");
    let t4 = etag(&r);
    // Deleted: `deleted`, not 304.
    a.client.delete(&name("db/key")).await.unwrap();
    let (status, code) = code_of(get(&a.client, path, Some(&t4)).await).await;
    assert_eq!((status.as_u16(), code.as_str()), (409, "deleted"));
}

#[tokio::test]
async fn a_not_modified_read_is_audited_like_any_read() {
    let ts = TestServer::start().await;
    let a = ts.new_client("acme").await;
    a.client
        .put(&name("k"), b"raw".to_vec(), Precondition::None)
        .await
        .unwrap();
    let t = etag(&get(&a.client, "/v1/deposits/k", None).await);
    let reads = |es: &[keysafe_proto::audit::AuditEntry]| {
        es.iter()
            .filter(|e| {
                e.event.target == "/v1/deposits/k"
                    && e.event.operation.starts_with("GET ")
                    && e.event.outcome == "ok"
                    && e.event.version == Some(1)
                    && e.event.client.as_deref() == Some(a.fingerprint.as_str())
            })
            .count()
    };
    ts.app.state.audit.flush(Duration::from_secs(30)).await;
    let before = reads(
        &ts.admin
            .audit_entries(1, None, 10_000)
            .await
            .unwrap()
            .entries,
    );
    assert_eq!(before, 1);
    for _ in 0..3 {
        let r = get(&a.client, "/v1/deposits/k", Some(&t)).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }
    ts.app.state.audit.flush(Duration::from_secs(30)).await;
    let after = reads(
        &ts.admin
            .audit_entries(1, None, 10_000)
            .await
            .unwrap()
            .entries,
    );
    assert_eq!(after, 4);
}
