//! What a request costs keysafe: with the gateway's key caches off, every request reads its key
//! from keysafe, and a request that needs both the key's current version and its metadata (for
//! the key ACL check) gets them from one read. Reads are counted in keysafe's own audit trail,
//! where each deposit read is one entry.

use crate::common::*;
use reqwest::{Method, StatusCode};
use std::time::{Duration, Instant};

/// The reads of `key`'s deposit recorded so far (`key` is a test's plain ASCII name).
async fn reads_of(env: &Env, key: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM audit_log WHERE operation LIKE 'GET %' AND target LIKE '%/kms/keys/{key}%'"
    );
    let n = env.server.raw_db().await.scalar(&sql, &[]).await.unwrap();
    n.as_int().unwrap()
}

/// Waits until at least `want` reads of `key` are recorded (entries are appended after the
/// answer), then a little longer, and returns the count then.
async fn settled_reads(env: &Env, key: &str, want: i64) -> i64 {
    let start = Instant::now();
    while reads_of(env, key).await < want && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    reads_of(env, key).await
}

#[tokio::test]
async fn a_request_that_misses_the_key_caches_reads_the_key_once() {
    let env = Env::new().await;
    let gw = env
        .gateway("127.0.0.1", |cfg, _| {
            cfg.cache.enable = false;
            // No EEKs made ahead: a background refill would read the key too.
            cfg.eek_queue.size = 0;
        })
        .await;
    let mut c = Caller::new("alice");
    let r = c
        .call(
            &gw,
            Method::POST,
            "/keys",
            Some(r#"{"name":"reads1","cipher":"AES/CTR/NoPadding","length":128}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let before = settled_reads(&env, "reads1", 0).await;

    const ROUNDS: i64 = 3;
    for _ in 0..ROUNDS {
        let r = c
            .call(&gw, Method::GET, "/key/reads1/_currentversion", None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()["versionName"], "reads1@0");
    }
    assert_eq!(
        settled_reads(&env, "reads1", before + ROUNDS).await - before,
        ROUNDS,
        "reads of the key for {ROUNDS} current-version requests"
    );

    let before = settled_reads(&env, "reads1", 0).await;
    let mut eeks = Vec::new();
    for _ in 0..ROUNDS {
        let r = c
            .call(
                &gw,
                Method::GET,
                "/key/reads1/_eek?eek_op=generate&num_keys=1",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()[0]["versionName"], "reads1@0");
        eeks.push(r.json()[0].clone());
    }
    assert_eq!(
        settled_reads(&env, "reads1", before + ROUNDS).await - before,
        ROUNDS,
        "reads of the key for {ROUNDS} generate requests"
    );

    // Decrypting reads the version named, whose metadata the key ACL check uses.
    let before = settled_reads(&env, "reads1", 0).await;
    for eek in &eeks {
        let body = serde_json::json!({
            "name": "reads1",
            "iv": eek["iv"],
            "material": eek["encryptedKeyVersion"]["material"],
        });
        let r = c
            .call(
                &gw,
                Method::POST,
                "/keyversion/reads1@0/_eek?eek_op=decrypt",
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(
        settled_reads(&env, "reads1", before + ROUNDS).await - before,
        ROUNDS,
        "reads of the key for {ROUNDS} decrypt requests"
    );
}
