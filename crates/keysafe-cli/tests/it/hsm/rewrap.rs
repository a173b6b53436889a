//! Keyring rotation: a server killed with SIGKILL in the middle of re-wrapping the data keys
//! loses nothing, the job resumes to the end after a restart, and the old key version can then
//! be retired.

use super::{Server, client, free_port, init_on, put_many, read_back, set_config, wait_status};
use crate::{keysafe, ok, run};
use keysafe_testkit::TestStorage;
use std::time::Duration;

async fn kill_9_in_the_middle_of_rewrapping_loses_nothing(storage: TestStorage) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    let mut c = keysafe(work.path());
    init_on(&mut c, &dir, free_port(), storage);
    ok(&run(c).await);
    set_config(&dir, "rewrap_batch = 256", "rewrap_batch = 3");
    set_config(&dir, "rewrap_pause = \"0s\"", "rewrap_pause = \"40ms\"");
    let mut srv = Server::start(keysafe(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| keysafe(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "r", 150).await;
    let mut rot = keysafe(work.path());
    rot.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["keyring", "rotate", "--json"]);
    assert!(ok(&run(rot).await).contains("\"version\":2"));
    // Wait until the job is visibly half-way, then kill -9.
    let status = || {
        let mut s = keysafe(work.path());
        s.args(["admin", "--data-dir"])
            .arg(&dir)
            .args(["keyring", "status", "--json"]);
        s
    };
    let mut seen = None;
    for _ in 0..600 {
        let s: serde_json::Value = serde_json::from_str(&ok(&run(status()).await)).unwrap();
        let moved = s["versions"][1]["data_keys"].as_u64().unwrap();
        if moved > 0 {
            seen = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    srv.kill9();
    let seen = seen.expect("the re-wrap job never started");
    assert!(
        seen["rewrap_pending"].as_u64().unwrap() > 0,
        "killed after the job finished: {seen}"
    );

    // Restart: everything reads, and the job resumes to the end.
    let srv = Server::start(keysafe(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    read_back(&cl, &w).await;
    let mut done = None;
    for _ in 0..1200 {
        let s: serde_json::Value = serde_json::from_str(&ok(&run(status()).await)).unwrap();
        if s["rewrap_pending"] == 0 {
            done = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = done.expect("the re-wrap job did not resume");
    assert_eq!(done["versions"][1]["data_keys"], 150);
    read_back(&cl, &w).await;
    let mut r = keysafe(work.path());
    r.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["keyring", "retire", "1"]);
    ok(&run(r).await);
    read_back(&cl, &w).await;
    drop(srv);
}

// A crash in the middle of re-wrapping, on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(multi_thread:
    kill_9_in_the_middle_of_rewrapping_loses_nothing,
);
