//! What registration, open to callers without an identity, may cost: failed attempts are counted
//! with those in progress (no race past the limit), verifications are bounded, and
//! registrations that leave pending clients are limited.

use crate::assert_code;
use keysafe_client::reqwest::Method;
use keysafe_proto::api::{AuthSecret, ClientState, OrgSetAuthRequest};
use keysafe_proto::{ErrorCode, OrgName};
use keysafe_testkit::TestServer;
use std::time::Duration;

#[tokio::test]
async fn concurrent_failed_attempts_cannot_race_past_the_limit() {
    let ts = TestServer::start_with(|c| {
        c.registration_failure_limit = 3;
        c.registration_failure_window = Duration::from_secs(600);
    })
    .await;
    ts.create_org("acme").await;
    let attempts =
        (0..16).map(|_| ts.register("acme", Some(AuthSecret::new("wrong-secret-wrong-secret"))));
    let results = futures_util::future::join_all(attempts).await;
    let mut invalid = 0;
    let mut limited = 0;
    for r in results {
        match r.map(|c| c.fingerprint).err().and_then(|e| e.code()) {
            Some(ErrorCode::InvalidAuth) => invalid += 1,
            Some(ErrorCode::RateLimited) => limited += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert!(
        invalid <= 3,
        "at most the limit of attempts is verified: {invalid} were"
    );
    assert_eq!(invalid + limited, 16);
}

#[tokio::test]
async fn verifications_are_bounded_and_a_full_server_says_retry_later() {
    let ts = TestServer::start().await;
    let secret = ts.create_org("acme").await;
    let sem = ts.app.state.registration.verifications.clone();
    let n = u32::try_from(sem.available_permits()).unwrap();
    assert!(n >= 1);
    // Every verification slot is taken (as by n slow registrations in progress).
    let all = sem.acquire_many(n).await.unwrap();
    let (_d, stranger) = ts.unregistered_client();
    let r = stranger
        .raw_request(Method::POST, "/v1/register")
        .header("content-type", "application/json")
        .body(format!(
            "{{\"org\":\"acme\",\"auth_secret\":\"{}\"}}",
            secret.expose()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let body: keysafe_proto::ErrorBody = r.json().await.unwrap();
    assert_eq!(body.error.code, ErrorCode::RateLimited);
    drop(all);
    // With a slot free the same registration goes through.
    let c = ts.register("acme", Some(secret)).await.unwrap();
    assert_eq!(c.client.whoami().await.unwrap().state, ClientState::Active);
}

#[tokio::test]
async fn registrations_awaiting_approval_are_limited() {
    let ts = TestServer::start_with(|c| {
        c.registration_pending_limit = 2;
        c.registration_pending_window = Duration::from_secs(3600);
    })
    .await;
    ts.create_org("acme").await;
    let org = OrgName::parse("acme").unwrap();
    ts.admin
        .set_org_auth(&org, &OrgSetAuthRequest::Approval)
        .await
        .unwrap();
    for _ in 0..2 {
        let c = ts.register("acme", None).await.unwrap();
        assert_code(c.client.whoami().await, ErrorCode::ClientPending);
    }
    assert_code(
        ts.register("acme", None).await.map(|c| c.fingerprint),
        ErrorCode::RateLimited,
    );
    let pending = ts
        .admin
        .list_clients(Some(&org), Some(ClientState::Pending))
        .await
        .unwrap();
    assert_eq!(pending.clients.len(), 2, "no third pending client");
    // A one-time registration token (an administrator's approval) is not held back.
    let token = ts
        .admin
        .mint_registration_token(&org, None)
        .await
        .unwrap()
        .token;
    let c = ts.register("acme", Some(token)).await.unwrap();
    assert_eq!(c.client.whoami().await.unwrap().state, ClientState::Active);
}

#[tokio::test]
async fn pending_registrations_from_all_sources_are_limited_too() {
    let ts = TestServer::start_with(|c| {
        c.registration_pending_limit = 100;
        c.registration_pending_total = 1;
    })
    .await;
    ts.create_org("acme").await;
    ts.admin
        .set_org_auth(
            &OrgName::parse("acme").unwrap(),
            &OrgSetAuthRequest::Approval,
        )
        .await
        .unwrap();
    ts.register("acme", None).await.unwrap();
    assert_code(
        ts.register("acme", None).await.map(|c| c.fingerprint),
        ErrorCode::RateLimited,
    );
}
