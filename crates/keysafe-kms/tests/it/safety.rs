//! The gateway's safe defaults, each with its negative test: ACLs without a file, the minimal
//! HDFS ACL file of docs/kms.md, delegation-token limits and storage, listener limits, the
//! audit log, keysafe's refusals as 4xx, the bounded metadata batch, health and metrics, and a
//! `kms` group someone else created.

use crate::common::*;
use async_trait::async_trait;
use keysafe_kms::backend::{BackendError, KeyBackend, KeyVersionRecord, SharedBlob, SharedEntry};
use keysafe_kms::{Gateway, KmsConfig};
use keysafe_proto::api::ListQuery;
use reqwest::{Method, StatusCode};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The "minimal ACL file for HDFS" code block of docs/kms.md (so the docs stay true).
fn documented_hdfs_acls() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/kms.md"))
            .unwrap();
    let after = doc
        .split("<!-- minimal-hdfs-acls -->")
        .nth(1)
        .expect("docs/kms.md has the minimal HDFS ACL block");
    let block = after.split("```xml\n").nth(1).unwrap();
    block.split("```").next().unwrap().to_owned()
}

async fn create(c: &mut Caller, gw: &Gw, name: &str) -> Resp {
    c.call(
        gw,
        Method::POST,
        "/keys",
        Some(&format!(r#"{{"name":"{name}"}}"#)),
    )
    .await
}

/// Without an ACL file only the configured key administrators reach keys; with none
/// configured, nobody.
#[tokio::test]
async fn without_an_acl_file_only_key_administrators() {
    let env = Env::new().await;
    let gw = env
        .gateway("127.0.0.1", |c, _| c.key_admins = "keyadmin".into())
        .await;
    let mut admin = Caller::new("keyadmin");
    assert_eq!(
        create(&mut admin, &gw, "k").await.status,
        StatusCode::CREATED
    );
    let r = admin.call(&gw, Method::GET, "/key/k/_versions", None).await;
    assert_eq!(r.status, StatusCode::OK);
    for user in ["hdfs", "alice"] {
        let mut c = Caller::new(user);
        for (m, path) in [
            (Method::GET, "/key/k/_versions"),
            (Method::GET, "/key/k/_currentversion"),
            (Method::GET, "/keyversion/k@0"),
            (Method::GET, "/key/k/_eek?eek_op=generate&num_keys=1"),
            (Method::GET, "/keys/names"),
        ] {
            let r = c.call(&gw, m, path, None).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{user} {path}: {}", r.text);
            assert!(!r.text.contains("material"));
        }
        assert_eq!(
            create(&mut c, &gw, "mine").await.status,
            StatusCode::FORBIDDEN
        );
    }
    // No administrators, no file: nobody.
    let dir2 = env
        .gateway("127.0.0.1", |c, _| c.key_admins = String::new())
        .await;
    let mut anyone = Caller::new("keyadmin");
    let r = anyone.call(&dir2, Method::GET, "/keys/names", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// The minimal ACL file of docs/kms.md: `hdfs` generates and decrypts EEKs and reads
/// metadata, only the administrators read key material, everyone else nothing.
#[tokio::test]
async fn the_documented_minimal_hdfs_acl_file() {
    let env = Env::new().await;
    let gw = env
        .gateway("127.0.0.1", |c, d| {
            std::fs::write(d.join("kms-acls.xml"), documented_hdfs_acls()).unwrap();
            c.acl_file = Some(d.join("kms-acls.xml"));
            c.key_admins = "keyadmin".into();
        })
        .await;
    let mut admin = Caller::new("keyadmin");
    assert_eq!(
        create(&mut admin, &gw, "ez").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        admin
            .call(&gw, Method::GET, "/key/ez/_currentversion", None)
            .await
            .status,
        StatusCode::OK
    );
    let mut hdfs = Caller::new("hdfs");
    let r = hdfs
        .call(
            &gw,
            Method::GET,
            "/key/ez/_eek?eek_op=generate&num_keys=1",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let eek = &r.json()[0];
    let body = serde_json::json!({
        "name": "ez",
        "iv": eek["iv"],
        "material": eek["encryptedKeyVersion"]["material"],
    })
    .to_string();
    let vn = eek["versionName"].as_str().unwrap();
    let r = hdfs
        .call(
            &gw,
            Method::POST,
            &format!("/keyversion/{vn}/_eek?eek_op=decrypt"),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        hdfs.call(&gw, Method::GET, "/key/ez/_metadata", None)
            .await
            .status,
        StatusCode::OK
    );
    for path in [
        "/key/ez/_currentversion",
        "/key/ez/_versions",
        "/keyversion/ez@0",
    ] {
        let r = hdfs.call(&gw, Method::GET, path, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "hdfs {path}");
    }
    assert_eq!(
        create(&mut hdfs, &gw, "x").await.status,
        StatusCode::FORBIDDEN
    );
    let mut alice = Caller::new("alice");
    let r = alice
        .call(
            &gw,
            Method::GET,
            "/key/ez/_eek?eek_op=generate&num_keys=1",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = alice
        .call(
            &gw,
            Method::POST,
            &format!("/keyversion/{vn}/_eek?eek_op=decrypt"),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// Deposits (and versions) of the gateway's group, to see what tokens cost in keysafe.
async fn stored(env: &Env) -> (usize, u64) {
    let mut n = 0;
    let mut versions = 0;
    let mut page = None;
    loop {
        let l = env
            .client
            .client
            .list(&ListQuery {
                prefix: Some("kms/".into()),
                limit: Some(ListQuery::MAX_LIMIT),
                page_token: page.take(),
                deleted: Some(true),
                owner: Some("group:kms".into()),
            })
            .await
            .unwrap();
        n += l.deposits.len();
        versions += l.deposits.iter().map(|d| d.version.get()).sum::<u64>();
        match l.next_page_token {
            Some(t) => page = Some(t),
            None => return (n, versions),
        }
    }
}

#[tokio::test]
async fn delegation_tokens_cost_no_storage_to_issue_and_are_limited() {
    let env = Env::new().await;
    let gw = env
        .gateway("127.0.0.1", |c, _| {
            c.delegation_token.acl = "alice,bob".into();
            c.delegation_token.max_per_user_per_hour = 300;
        })
        .await;
    let mut alice = Caller::new("alice");
    alice.login(&gw.base).await;
    let before = stored(&env).await;
    let mut toks = vec![];
    for _ in 0..300 {
        let r = alice
            .call(
                &gw,
                Method::GET,
                "/?op=GETDELEGATIONTOKEN&renewer=alice",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        toks.push(r.json()["Token"]["urlString"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        stored(&env).await,
        before,
        "issuing tokens wrote nothing to keysafe"
    );
    // The cap: the 301st within the hour is refused (429), bob still gets his.
    let r = alice
        .call(
            &gw,
            Method::GET,
            "/?op=GETDELEGATIONTOKEN&renewer=alice",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    let mut bob = Caller::new("bob");
    let r = bob
        .call(
            &gw,
            Method::GET,
            "/?op=GETDELEGATIONTOKEN&renewer=bob",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The ACL: carol may not get tokens at all.
    let mut carol = Caller::new("carol");
    let r = carol
        .call(
            &gw,
            Method::GET,
            "/?op=GETDELEGATIONTOKEN&renewer=carol",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Renewing and cancelling write one small record each.
    let r = alice
        .call(
            &gw,
            Method::PUT,
            &format!("/?op=RENEWDELEGATIONTOKEN&token={}", toks[0]),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = alice
        .call(
            &gw,
            Method::PUT,
            &format!("/?op=CANCELDELEGATIONTOKEN&token={}", toks[1]),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let after = stored(&env).await;
    assert_eq!(
        after.0,
        before.0 + 2,
        "one record per renewed or cancelled token"
    );
    assert_eq!(after.1, before.1 + 2);
    // The cancelled token is refused; the others work.
    let h = http();
    let r = h
        .get(format!("{}/keys/names", gw.base))
        .header("X-Hadoop-Delegation-Token", &toks[1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = h
        .get(format!("{}/keys/names", gw.base))
        .header("X-Hadoop-Delegation-Token", &toks[2])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Records older than a renew interval are pruned (a zero interval makes both old).
    let pruner = keysafe_kms::delegation::DtManager::shared(
        gw.gw.kms.backend().clone(),
        keysafe_kms::config::DtConfig {
            renew_interval: Duration::ZERO,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pruner.prune().await.unwrap(), 2);
    let pruned = stored(&env).await;
    assert_eq!(
        pruned.0, before.0,
        "the records are gone (purged, not soft-deleted)"
    );
}

#[tokio::test]
async fn the_audit_log_is_private_and_holds_no_credentials() {
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |_, _| {}).await;
    let h = http();
    // A bogus token in the query (refused and audited), and a real one.
    let r = h
        .get(format!(
            "{}/keys/names?delegation=SECRET-TOKEN-VALUE&doAs=x",
            gw.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut alice = Caller::new("alice");
    let r = alice
        .call(
            &gw,
            Method::GET,
            "/?op=GETDELEGATIONTOKEN&renewer=alice",
            None,
        )
        .await;
    let tok = r.json()["Token"]["urlString"].as_str().unwrap().to_owned();
    h.put(format!("{}/?op=CANCELDELEGATIONTOKEN&token={tok}", gw.base))
        .send()
        .await
        .unwrap();
    let r = h
        .get(format!("{}/keys/names?delegation={tok}", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "cancelled");
    gw.gw.audit.flush();
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(!log.contains("SECRET-TOKEN-VALUE"), "{log}");
    assert!(!log.contains(&tok[..16]), "{log}");
    assert!(log.contains("delegation=<redacted>&doAs=x"), "{log}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(gw.audit_log())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

/// keysafe refuses a key record too large for a deposit (413): the Hadoop client gets a final
/// 4xx IllegalArgumentException, not a 500 that would send it to every other gateway.
#[tokio::test]
async fn an_oversized_key_is_a_client_error_not_an_outage() {
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |_, _| {}).await;
    let mut alice = Caller::new("alice");
    let body = format!(
        r#"{{"name":"big","description":"{}"}}"#,
        "d".repeat(1536 * 1024)
    );
    let r = alice.call(&gw, Method::POST, "/keys", Some(&body)).await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.text);
    assert_eq!(
        r.exception(),
        "java.lang.IllegalArgumentException",
        "{}",
        r.text
    );
    // The gateway (and keysafe) still serve.
    assert_eq!(
        create(&mut alice, &gw, "small").await.status,
        StatusCode::CREATED
    );
}

/// Counts keysafe requests made through the production backend (instrumentation around the
/// real `DepositBackend`, not a mock).
struct Counting {
    inner: Arc<dyn KeyBackend>,
    calls: AtomicUsize,
}

impl Counting {
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl KeyBackend for Counting {
    async fn create(&self, rec: &KeyVersionRecord) -> Result<(), BackendError> {
        self.tick();
        self.inner.create(rec).await
    }
    async fn current(&self, name: &str) -> Result<Option<KeyVersionRecord>, BackendError> {
        self.tick();
        self.inner.current(name).await
    }
    async fn version(&self, name: &str, n: u32) -> Result<Option<KeyVersionRecord>, BackendError> {
        self.tick();
        self.inner.version(name, n).await
    }
    async fn roll(&self, rec: &KeyVersionRecord) -> Result<(), BackendError> {
        self.tick();
        self.inner.roll(rec).await
    }
    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        self.tick();
        self.inner.delete(name).await
    }
    async fn names(&self) -> Result<Vec<String>, BackendError> {
        self.tick();
        self.inner.names().await
    }
    async fn shared(&self, slot: &str) -> Result<Option<SharedBlob>, BackendError> {
        self.inner.shared(slot).await
    }
    async fn put_shared(
        &self,
        slot: &str,
        data: &[u8],
        expected: Option<u64>,
    ) -> Result<u64, BackendError> {
        self.inner.put_shared(slot, data, expected).await
    }
    async fn ping(&self) -> Result<(), BackendError> {
        self.inner.ping().await
    }
    async fn list_shared(&self, prefix: &str) -> Result<Vec<SharedEntry>, BackendError> {
        self.inner.list_shared(prefix).await
    }
    async fn remove_shared(&self, slot: &str) -> Result<(), BackendError> {
        self.inner.remove_shared(slot).await
    }
}

/// 3,000 names in one metadata request cost a listing plus one read per existing key, once;
/// the same request again costs nothing; more than 5,000 distinct names are refused.
#[tokio::test]
async fn metadata_batches_do_not_fan_out() {
    let env = Env::new().await;
    let backend = keysafe_kms::deposits::DepositBackend::open(
        &env.client.home,
        env.client.client.clone(),
        "kms",
        None,
    )
    .await
    .unwrap();
    let counting = Arc::new(Counting {
        inner: Arc::new(backend),
        calls: AtomicUsize::new(0),
    });
    let mut cfg = KmsConfig {
        audit_log: None,
        key_admins: "*".into(),
        ..Default::default()
    };
    cfg.limits.max_header_bytes = 1024 * 1024;
    cfg.cache.listing_timeout = Duration::from_secs(30);
    let gw = Gateway::with_backend(counting.clone(), &cfg).await.unwrap();
    let gw = serve_gateway(gw, tempfile::tempdir().unwrap(), "127.0.0.1", false).await;
    let mut alice = Caller::new("alice");
    for k in ["k1", "k2", "k3"] {
        assert_eq!(create(&mut alice, &gw, k).await.status, StatusCode::CREATED);
    }
    let mut q: Vec<String> = (0..2997).map(|i| format!("key=missing{i}")).collect();
    q.extend(["key=k1".into(), "key=k2".into(), "key=k3".into()]);
    let url = format!("/keys/metadata?{}", q.join("&"));
    let before = counting.calls.load(Ordering::Relaxed);
    let r = alice.call(&gw, Method::GET, &url, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v.as_array().unwrap().len(), 3000);
    assert_eq!(v[2999]["name"], "k3");
    assert_eq!(v[0], serde_json::json!({}));
    let first = counting.calls.load(Ordering::Relaxed) - before;
    assert!(
        first <= 4,
        "one listing and at most one read per existing key, got {first}"
    );
    let r = alice.call(&gw, Method::GET, &url, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let second = counting.calls.load(Ordering::Relaxed) - before - first;
    assert_eq!(second, 0, "the same request again reaches keysafe no more");
    // A key created meanwhile through this gateway is seen at once.
    create(&mut alice, &gw, "k4").await;
    let r = alice
        .call(&gw, Method::GET, "/keys/metadata?key=k4&key=nope", None)
        .await;
    assert_eq!(r.json()[0]["name"], "k4");
    // Bounded.
    let q: Vec<String> = (0..5_001).map(|i| format!("key=m{i}")).collect();
    let r = alice
        .call(
            &gw,
            Method::GET,
            &format!("/keys/metadata?{}", q.join("&")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("at most 5000"), "{}", r.text);
}

#[tokio::test]
async fn health_and_metrics() {
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |_, _| {}).await;
    let h = http();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = h
            .get(format!("http://{}/health", gw.addr))
            .send()
            .await
            .unwrap();
        let st = r.status();
        let v: serde_json::Value = r.json().await.unwrap();
        if st == StatusCode::OK {
            assert_eq!(v["keysafe_reachable"], true);
            assert_eq!(v["acl_file_ok"], true);
            break;
        }
        assert!(std::time::Instant::now() < until, "never healthy: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut alice = Caller::new("alice");
    alice.call(&gw, Method::GET, "/keys/names", None).await;
    let ml = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = ml.local_addr().unwrap();
    tokio::spawn(keysafe_kms::metrics::serve(
        ml,
        gw.gw.clone(),
        std::future::pending(),
    ));
    let text = h
        .get(format!("http://{maddr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"keysafe_kms_requests_total{op="get_keys",status="2xx"}"#),
        "{text}"
    );
    assert!(text.contains("keysafe_kms_keysafe_reachable 1"), "{text}");
    assert!(!text.contains("alice"), "no user names in labels");
    let r = h
        .get(format!("http://{maddr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A non-administrator client creates a group named `kms` before any gateway: the gateway does
/// not adopt it, with or without a pin, even once that client has let it in.
#[tokio::test]
async fn a_kms_group_someone_else_created_is_refused() {
    let env = Env::new().await;
    let squatter = env.server.new_client("hadoop").await;
    let vault =
        keysafe_client::vault::Vault::from_home(&squatter.home, squatter.client.clone()).unwrap();
    let kms = keysafe_proto::GroupName::parse("kms").unwrap();
    vault.create_group(&kms, &[]).await.unwrap();
    // The gateway's client is not a member: refused.
    let e = Gateway::new(
        &env.client.home,
        env.client.client.clone(),
        &KmsConfig::default(),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("is not a member of the keysafe group kms"),
        "{e}"
    );
    // An administrator adds it (as the message suggests) and the squatter admits it at once.
    env.server
        .admin
        .admin_add_member(&env.client.org, &kms, &env.client.fingerprint)
        .await
        .unwrap();
    vault.admit(&kms, &env.client.fingerprint).await.unwrap();
    // No pin, not created by this gateway: refused.
    let e = Gateway::new(
        &env.client.home,
        env.client.client.clone(),
        &KmsConfig::default(),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("did not create it"), "{e}");
    // Pinned to the founding recipient the administrator expected: refused, naming both.
    let mut pinned = KmsConfig::default();
    pinned.keysafe.group_recipient =
        Some("age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg".into());
    let e = Gateway::new(&env.client.home, env.client.client.clone(), &pinned)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("was founded with the recipient"), "{e}");
    assert!(
        e.contains("age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg"),
        "{e}"
    );
    // And a pinned gateway never creates the group anew where it is missing.
    let env2 = Env::new().await;
    let e = Gateway::new(&env2.client.home, env2.client.client.clone(), &pinned)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("never creates a pinned group anew"), "{e}");
}
