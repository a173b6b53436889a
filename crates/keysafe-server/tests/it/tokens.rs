//! Sequenced tokens (clone detection), one-time registration tokens, the failed-registration
//! limit, and disable-unactivated.

use crate::assert_code;
use keysafe_client::client::ClientOptions;
use keysafe_client::{ClientHome, KeysafeClient, ServerSpec, ServerTrust};
use keysafe_proto::api::{AuthSecret, ClientState, OrgSetAuthRequest};
use keysafe_proto::{ErrorCode, OrgName};
use keysafe_testkit::{TestServer, TestStorage};
use std::time::Duration;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

async fn state_of(
    ts: &TestServer,
    fp: &keysafe_proto::ClientFingerprint,
) -> (ClientState, Option<String>) {
    let list = ts.admin.list_clients(None, None).await.unwrap();
    let c = list.clients.iter().find(|c| &c.fingerprint == fp).unwrap();
    (c.state, c.state_reason.clone())
}

async fn a_copied_client_home_used_elsewhere_is_locked_out(storage: TestStorage) {
    let ts = TestServer::start_on_with(storage, |c| {
        c.token_rotation = Duration::from_millis(300);
        c.token_grace = Duration::from_millis(1000);
    })
    .await;
    let a = ts.new_client("acme").await;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(a.home_dir(), copy.path());
    let b = KeysafeClient::from_home(&ClientHome::load(copy.path()).unwrap()).unwrap();
    // Both copies hold the same token: indistinguishable so far. The original talks first once
    // the rotation interval has passed, so it is the one that moves on.
    let start = a.client.token_counter().unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    a.client.whoami().await.unwrap();
    assert_eq!(a.client.token_counter().unwrap(), start + 1);
    // The original uses its new token: the server now knows it arrived.
    a.client.whoami().await.unwrap();
    // Within the grace window the copy's (replaced) token still passes: it could be a request
    // that was in flight when the token rotated. It gets no copy of the current token.
    b.whoami().await.unwrap();
    assert_eq!(b.token_counter().unwrap(), start);
    // Past the grace window the copy is caught.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_code(b.whoami().await, ErrorCode::SuspectedClone);
    // Locked for both copies, with the reason recorded.
    assert_code(a.client.whoami().await, ErrorCode::SuspectedClone);
    let (state, reason) = state_of(&ts, &a.fingerprint).await;
    assert_eq!(state, ClientState::SuspectedClone);
    assert!(reason.unwrap().contains("copy of this client's identity"));
    // Enabling is not the way out; resetting the token is.
    assert_code(
        ts.admin.client_action(&a.fingerprint, "enable").await,
        ErrorCode::InvalidState,
    );
    ts.admin
        .client_action(&a.fingerprint, "reset-token")
        .await
        .unwrap();
    // The first copy to talk afterwards gets a fresh token; the other is caught again once the
    // grace window has passed.
    a.client.whoami().await.unwrap();
    assert!(a.client.token_counter().unwrap() > start + 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.client.whoami().await.unwrap();
    assert_code(b.whoami().await, ErrorCode::SuspectedClone);
}

/// Sends an authenticated request whose answer the client never sees (a connection reset, a
/// crash before the token was stored): the new token it may carry is dropped. Returns it.
async fn lost_answer(c: &KeysafeClient) -> Option<String> {
    let r = c
        .raw_request(http::Method::GET, "/v1/whoami")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.headers()
        .get("x-keysafe-token")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A rotation whose answer was lost never locks the client: while the new token has not been
/// presented, the token it replaced is answered with the same new token again, within the grace
/// window and long after it.
async fn a_lost_rotation_answer_does_not_lock_the_client(storage: TestStorage) {
    let ts = TestServer::start_on_with(storage, |c| {
        c.token_rotation = Duration::from_millis(300);
        c.token_grace = Duration::from_millis(1000);
    })
    .await;
    let a = ts.new_client("acme").await;
    a.client.whoami().await.unwrap();
    let start = a.client.token_counter().unwrap();

    // Lost once, then asked again within the grace window.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let lost = lost_answer(&a.client).await.expect("a rotation");
    assert_eq!(a.client.token_counter().unwrap(), start);
    a.client.whoami().await.unwrap();
    assert_eq!(a.client.token_counter().unwrap(), start + 1);
    assert_eq!(
        *a.client.current_token().unwrap(),
        lost,
        "the same token, issued again"
    );

    // Lost twice in a row, and the client comes back only after the grace window.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let lost = lost_answer(&a.client).await.expect("a rotation");
    assert_eq!(lost_answer(&a.client).await.as_deref(), Some(lost.as_str()));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    a.client.whoami().await.unwrap();
    assert_eq!(*a.client.current_token().unwrap(), lost);
    assert_eq!(a.client.token_counter().unwrap(), start + 2);
    assert_eq!(state_of(&ts, &a.fingerprint).await.0, ClientState::Active);

    // Once the new token has been presented, the old one gets no copy of it any more: within
    // the grace window it passes (a request in flight), after it, it is a clone's.
    let old_home = tempfile::tempdir().unwrap();
    copy_dir(a.home_dir(), old_home.path());
    let old = KeysafeClient::from_home(&ClientHome::load(old_home.path()).unwrap()).unwrap();
    // (Issued over a second ago: presenting it rotates at once.)
    a.client.whoami().await.unwrap();
    assert_eq!(a.client.token_counter().unwrap(), start + 3);
    a.client.whoami().await.unwrap();
    old.whoami().await.unwrap();
    assert_eq!(old.token_counter().unwrap(), start + 2, "no re-issue");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_code(old.whoami().await, ErrorCode::SuspectedClone);
}

/// A copy that talks first after a rotation, before the original presented its new token,
/// cannot be told from a lost answer and is handed the current token too; the first copy to
/// use the token of the next rotation exposes the other once the grace window has passed.
async fn a_copy_resynced_by_a_reissue_is_caught_at_the_next_rotation(storage: TestStorage) {
    let ts = TestServer::start_on_with(storage, |c| {
        c.token_rotation = Duration::from_millis(300);
        c.token_grace = Duration::from_millis(1000);
    })
    .await;
    let a = ts.new_client("acme").await;
    a.client.whoami().await.unwrap();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(a.home_dir(), copy.path());
    let b = KeysafeClient::from_home(&ClientHome::load(copy.path()).unwrap()).unwrap();
    let start = a.client.token_counter().unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    a.client.whoami().await.unwrap();
    b.whoami().await.unwrap();
    assert_eq!(b.token_counter().unwrap(), start + 1, "resynced");
    // The next rotation: the original gets it and uses it.
    tokio::time::sleep(Duration::from_millis(350)).await;
    a.client.whoami().await.unwrap();
    a.client.whoami().await.unwrap();
    assert_eq!(a.client.token_counter().unwrap(), start + 2);
    // The copy's token passes only as an in-flight request would, and is caught afterwards.
    b.whoami().await.unwrap();
    assert_eq!(b.token_counter().unwrap(), start + 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_code(b.whoami().await, ErrorCode::SuspectedClone);
    assert_code(a.client.whoami().await, ErrorCode::SuspectedClone);
}

async fn heavy_concurrent_use_by_one_honest_client_never_trips(storage: TestStorage) {
    let ts = TestServer::start_on_with(storage, |c| {
        // Rotation far shorter than the slowest request under load: only the grace window
        // keeps in-flight requests valid.
        c.token_rotation = Duration::from_millis(20);
        c.token_grace = Duration::from_secs(60);
    })
    .await;
    let a = ts.new_client("acme").await;
    let name = keysafe_proto::DepositName::parse("k").unwrap();
    a.client
        .put(&name, b"x".to_vec(), keysafe_client::Precondition::None)
        .await
        .unwrap();
    let start = a.client.token_counter().unwrap();
    // Two "processes" on the same home, each with many requests in flight, for a while and
    // for at least 8 requests per task whatever the machine's load.
    let clients = [a.client.clone(), a.reopen()];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for c in clients {
        for _ in 0..16 {
            let c = c.clone();
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u32;
                while n < 8 || tokio::time::Instant::now() < deadline {
                    c.get_with(&name, None, keysafe_client::CacheUse::Refresh)
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            }));
        }
    }
    for t in tasks {
        assert!(t.await.unwrap() >= 8);
    }
    // Tokens rotated several times meanwhile, and nothing was flagged.
    assert!(a.reopen().token_counter().unwrap() >= start + 3);
    assert_eq!(state_of(&ts, &a.fingerprint).await.0, ClientState::Active);
    a.client.whoami().await.unwrap();
}

async fn a_request_without_the_token_is_refused_without_locking(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let a = ts.new_client("acme").await;
    let identity = ClientHome::read_identity(a.home_dir()).unwrap();
    let tokenless = KeysafeClient::with_servers(
        &[ServerSpec {
            url: ts.url.clone(),
            trust: ServerTrust::Fingerprint(ts.fingerprint.clone()),
        }],
        Some(&identity),
        &ClientOptions::default(),
        None,
    )
    .unwrap();
    assert_code(tokenless.whoami().await, ErrorCode::TokenRequired);
    // The real client is unaffected.
    let me = a.client.whoami().await.unwrap();
    assert_eq!(me.state, ClientState::Active);
    // The token lives in the home, private, and the server keeps only its hash.
    let token = std::fs::read_to_string(a.home_dir().join("token")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.home_dir().join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
    let db = ts.bytes_at_rest();
    let t = token.trim().as_bytes();
    assert!(!db.windows(t.len()).any(|w| w == t));
}

async fn one_time_registration_tokens(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    ts.create_org("acme").await;
    ts.create_org("globex").await;
    let acme = OrgName::parse("acme").unwrap();
    // Approval mode: a registration token still admits at once (the administrator minted it).
    ts.admin
        .set_org_auth(&acme, &OrgSetAuthRequest::Approval)
        .await
        .unwrap();
    let t = ts
        .admin
        .mint_registration_token(&acme, Some(3600))
        .await
        .unwrap();
    assert!(t.token.expose().starts_with("ksr_"));
    let c = ts.register("acme", Some(t.token.clone())).await.unwrap();
    assert_eq!(c.client.whoami().await.unwrap().state, ClientState::Active);
    // Used: refused, nothing registered.
    let again = ts.register("acme", Some(t.token.clone())).await;
    assert_code(again.map(|c| c.fingerprint), ErrorCode::InvalidAuth);
    // For another organisation: refused, and the token stays usable where it belongs.
    let t2 = ts.admin.mint_registration_token(&acme, None).await.unwrap();
    let wrong_org = ts.register("globex", Some(t2.token.clone())).await;
    assert_code(wrong_org.map(|c| c.fingerprint), ErrorCode::InvalidAuth);
    ts.register("acme", Some(t2.token.clone())).await.unwrap();
    // Expired: refused.
    let t3 = ts
        .admin
        .mint_registration_token(&acme, Some(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = ts.register("acme", Some(t3.token.clone())).await;
    assert_code(late.map(|c| c.fingerprint), ErrorCode::InvalidAuth);
    // Bad lifetimes and unknown organisations.
    assert_code(
        ts.admin.mint_registration_token(&acme, Some(0)).await,
        ErrorCode::BadRequest,
    );
    assert_code(
        ts.admin
            .mint_registration_token(&OrgName::parse("nowhere").unwrap(), None)
            .await,
        ErrorCode::NotFound,
    );
    // Ordinary clients cannot mint.
    assert_code(
        c.client.mint_registration_token(&acme, None).await,
        ErrorCode::Forbidden,
    );
    // An organisation secret cannot look like a registration token.
    assert_code(
        ts.admin
            .set_org_auth(
                &acme,
                &OrgSetAuthRequest::Secret {
                    secret: AuthSecret::new("ksr_this-looks-like-a-token"),
                },
            )
            .await,
        ErrorCode::BadRequest,
    );
    // Only hashes are stored.
    let db = ts.bytes_at_rest();
    for tok in [&t.token, &t2.token, &t3.token] {
        let b = tok.expose().as_bytes();
        assert!(!db.windows(b.len()).any(|w| w == b));
    }
}

async fn failed_registrations_are_rate_limited_per_address(storage: TestStorage) {
    let ts = TestServer::start_on_with(storage, |c| {
        c.registration_failure_limit = 3;
        c.registration_failure_window = Duration::from_secs(60);
    })
    .await;
    let secret = ts.create_org("acme").await;
    for _ in 0..3 {
        let r = ts
            .register("acme", Some(AuthSecret::new("wrong-secret-wrong-secret")))
            .await;
        assert_code(r.map(|c| c.fingerprint), ErrorCode::InvalidAuth);
    }
    // Now even the right secret waits: the address is over its limit.
    let r = ts.register("acme", Some(secret)).await;
    assert_code(r.map(|c| c.fingerprint), ErrorCode::RateLimited);
    let all = ts
        .admin
        .list_clients(Some(&OrgName::parse("acme").unwrap()), None)
        .await
        .unwrap();
    assert!(all.clients.is_empty());
}

async fn disable_unactivated_spares_clients_that_used_their_registration(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let used = ts.new_client("acme").await;
    let unused = ts.new_client("acme").await;
    used.client.whoami().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Nothing is older than an hour.
    assert!(
        ts.admin
            .disable_unactivated(3600)
            .await
            .unwrap()
            .clients
            .is_empty()
    );
    let disabled = ts.admin.disable_unactivated(0).await.unwrap();
    let fps: Vec<_> = disabled
        .clients
        .iter()
        .map(|c| c.fingerprint.clone())
        .collect();
    assert_eq!(fps, vec![unused.fingerprint.clone()]);
    assert_code(unused.client.whoami().await, ErrorCode::ClientDisabled);
    used.client.whoami().await.unwrap();
    // Administrators are never swept.
    ts.admin.whoami().await.unwrap();
}

// Every test above runs on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(
    a_copied_client_home_used_elsewhere_is_locked_out,
    a_request_without_the_token_is_refused_without_locking,
    one_time_registration_tokens,
    failed_registrations_are_rate_limited_per_address,
    disable_unactivated_spares_clients_that_used_their_registration,
    a_lost_rotation_answer_does_not_lock_the_client,
    a_copy_resynced_by_a_reissue_is_caught_at_the_next_rotation,
);
keysafe_testkit::storage_tests!(multi_thread:
    heavy_concurrent_use_by_one_honest_client_never_trips,
);
