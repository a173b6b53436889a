//! The PKCS#11 seal on SoftHSM2: it serves in keyring and in per-deposit mode (where a tampered
//! data key is an integrity error), a destroyed HSM key seals the server for good (after a
//! restart too, and no seal migration moves away from it), an HSM that goes away and comes back
//! only makes requests unavailable meanwhile, and a wrong PIN or a missing token is a clear
//! error that changes nothing.

use super::{
    Server, SoftHsm, assert_code, client, free_port, health, init, init_on, name, private_file,
    put_many, read_back, set_config, wait_status,
};
use crate::{fails_with, ok, run};
use keysafe_client::client::Precondition;
use keysafe_proto::ErrorCode;
use keysafe_testkit::TestStorage;
use std::time::Duration;

async fn pkcs11_seal_serves_and_destroying_the_hsm_key_seals_for_good(storage: TestStorage) {
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "ks-token");
    let dir = work.path().join("data");
    let port = free_port();
    let mut c = hsm.cmd(work.path());
    init_on(&mut c, &dir, port, storage);
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "ks-token",
        "--pkcs11-pin-file",
    ])
    .arg(&hsm.pin_file)
    .args(["--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&run(c).await)).unwrap();
    assert_eq!(v["seal"], "pkcs11");
    assert!(
        !dir.join("root.key").exists(),
        "no root key file under the HSM seal"
    );
    set_config(
        &dir,
        "check_interval = \"30s\"",
        "check_interval = \"200ms\"",
    );

    let srv = Server::start(hsm.cmd(work.path()), &dir);
    let h = wait_status(&srv.1, "ok").await;
    assert_eq!(h.seal.as_deref(), Some("pkcs11"));
    let cl = client(|| hsm.cmd(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "k", 5).await;
    read_back(&cl, &w).await;

    // Somebody deletes the key in the HSM: within the check interval the server seals itself.
    hsm.destroy_key("ks-token", "keysafe-seal");
    let h = wait_status(&srv.1, "sealed").await;
    assert!(h.sealed_reason.unwrap().contains("destroyed"));
    assert_code(cl.get(&name("k/0"), None).await, ErrorCode::Sealed);
    assert_code(
        cl.put(&name("k/9"), b"x".to_vec(), Precondition::None)
            .await,
        ErrorCode::Sealed,
    );

    // After a restart it stays sealed (it starts, it does not crash, it decrypts nothing).
    drop(srv);
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    let h = wait_status(&srv.1, "sealed").await;
    assert!(h.sealed_reason.unwrap().contains("keysafe-seal"));
    assert_code(cl.get(&name("k/1"), None).await, ErrorCode::Sealed);
    // Nothing can move the keyring away from the destroyed key either.
    drop(srv);
    let mut m = hsm.cmd(work.path());
    m.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["seal", "migrate", "--to", "file"]);
    let err = fails_with(&run(m).await, 1);
    assert!(err.contains("HSM key"), "{err}");
}

/// An HSM that goes away (its token store moved aside, as when the HSM or its token restarts)
/// and comes back is not a destroyed key: requests that need it fail with 503 meanwhile, the
/// periodic check does not seal the server, and it serves again once the token is back.
#[tokio::test(flavor = "multi_thread")]
async fn an_hsm_that_goes_away_and_comes_back_does_not_seal_the_server() {
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "flaky");
    let dir = work.path().join("data");
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "flaky",
        "--pkcs11-mode",
        "per-deposit",
        "--pkcs11-pin-file",
    ])
    .arg(&hsm.pin_file);
    ok(&run(c).await);
    set_config(
        &dir,
        "check_interval = \"30s\"",
        "check_interval = \"200ms\"",
    );
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| hsm.cmd(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "f", 5).await;
    read_back(&cl, &w).await;

    let away = work.path().join("tokens-away");
    std::fs::rename(&hsm.tokens, &away).unwrap();
    // Several check intervals pass while the token is away: requests that need the HSM fail
    // as unavailable, never as sealed, and the server does not seal itself.
    for i in 0..6 {
        assert_code(
            cl.get(&name(&format!("f/{}", i % 5)), None).await,
            ErrorCode::Unavailable,
        );
        let h = health(&srv.1).await.unwrap();
        assert_ne!(h.status, "sealed", "{h:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    std::fs::rename(&away, &hsm.tokens).unwrap();
    // Back: once the seal has reconnected, everything reads and writes again.
    let mut back = false;
    for _ in 0..300 {
        if cl.get(&name("f/0"), None).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "the server did not serve again after the HSM came back"
    );
    read_back(&cl, &w).await;
    let more = put_many(&cl, "g", 3).await;
    read_back(&cl, &more).await;
    assert_eq!(
        wait_status(&srv.1, "ok").await.seal.as_deref(),
        Some("pkcs11")
    );

    // Deleting the key is still final.
    hsm.destroy_key("flaky", "keysafe-seal");
    wait_status(&srv.1, "sealed").await;
    assert_code(cl.get(&name("f/1"), None).await, ErrorCode::Sealed);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_pin_is_a_clear_error_and_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "ks-token");
    let wrong = work.path().join("wrong.pin");
    private_file(&wrong, "0000-0000\n");
    let dir = work.path().join("data");
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "ks-token",
        "--pkcs11-pin-file",
    ])
    .arg(&wrong);
    let err = fails_with(&run(c).await, 1);
    assert!(err.contains("refused the PIN"), "{err}");
    assert!(!dir.exists(), "a failed init leaves nothing behind");

    // A good init, then a start with the wrong PIN: refused, data untouched.
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "ks-token",
        "--pkcs11-pin-file",
    ])
    .arg(&hsm.pin_file);
    ok(&run(c).await);
    let db_before = std::fs::read(dir.join("keysafe.db")).unwrap();
    let mut s = hsm.cmd(work.path());
    s.args(["serve", "--data-dir"])
        .arg(&dir)
        .arg("--pkcs11-pin-file")
        .arg(&wrong);
    let err = fails_with(&run(s).await, 1);
    assert!(err.contains("refused the PIN"), "{err}");
    assert_eq!(std::fs::read(dir.join("keysafe.db")).unwrap(), db_before);
    // A token that does not exist is named.
    set_config(
        &dir,
        "pkcs11_token = \"ks-token\"",
        "pkcs11_token = \"nope\"",
    );
    let mut s = hsm.cmd(work.path());
    s.args(["serve", "--data-dir"]).arg(&dir);
    assert!(fails_with(&run(s).await, 1).contains("no token labelled \"nope\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn per_deposit_mode_round_trips_and_needs_the_hsm_for_every_read() {
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "pd");
    let dir = work.path().join("data");
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "pd",
        "--pkcs11-key",
        "pd-key",
        "--pkcs11-mode",
        "per-deposit",
        "--pkcs11-pin-file",
    ])
    .arg(&hsm.pin_file);
    ok(&run(c).await);
    // No periodic check in this test: the per-deposit path itself must notice.
    set_config(&dir, "check_interval = \"30s\"", "check_interval = \"1h\"");
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| hsm.cmd(work.path()), &dir, work.path(), &srv.1).await;
    let mut w = put_many(&cl, "pd", 20).await;
    // Several versions of one deposit, and an empty payload.
    for v in 0..3 {
        let p = vec![v as u8; 100 + v];
        cl.put(&name("multi"), p.clone(), Precondition::None)
            .await
            .unwrap();
        w.insert("multi".into(), p);
    }
    cl.put(&name("empty"), Vec::new(), Precondition::None)
        .await
        .unwrap();
    w.insert("empty".into(), Vec::new());
    read_back(&cl, &w).await;
    let mut st = hsm.cmd(work.path());
    st.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["keyring", "status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&ok(&run(st).await)).unwrap();
    assert_eq!(s["per_deposit"], true);

    // A tampered data key is an integrity error (the HSM layer refuses it), not a crash, and
    // the server stays unsealed.
    {
        let storage = keysafe_server::config::Config::load(&dir).unwrap().storage;
        let mut db = keysafe_store::testing::RawDb::connect(&storage)
            .await
            .unwrap();
        let w = db
            .scalar(
                "SELECT wrapped_dek FROM deposit_versions WHERE name = 'pd/3'",
                &[],
            )
            .await
            .unwrap();
        let mut w = w.as_blob().unwrap().to_vec();
        w[20] ^= 1;
        let changed = db
            .execute(
                "UPDATE deposit_versions SET wrapped_dek = ?1 WHERE name = 'pd/3'",
                &[w.into()],
            )
            .await
            .unwrap();
        assert_eq!(changed, 1);
    }
    assert_code(cl.get(&name("pd/3"), None).await, ErrorCode::IntegrityError);
    assert_eq!(
        wait_status(&srv.1, "ok").await.seal.as_deref(),
        Some("pkcs11")
    );
    assert_eq!(
        &cl.get(&name("pd/4"), None).await.unwrap().payload[..],
        &w["pd/4"][..]
    );

    hsm.destroy_key("pd", "pd-key");
    // The very next read fails (sealed), and the server seals itself: even of the deposit just
    // read, whose row the server still holds (in this mode no read keeps a data key).
    assert_code(cl.get(&name("pd/4"), None).await, ErrorCode::Sealed);
    let h = wait_status(&srv.1, "sealed").await;
    assert!(h.seal.is_none());
    assert_code(cl.get(&name("pd/1"), None).await, ErrorCode::Sealed);
}

// The HSM seal, on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(multi_thread:
    pkcs11_seal_serves_and_destroying_the_hsm_key_seals_for_good,
);
