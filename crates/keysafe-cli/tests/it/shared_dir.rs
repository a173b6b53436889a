//! Two real `keysafe serve` processes over one data directory (the documented several-servers
//! setup on one SQLite file) under concurrent writes through both: every write succeeds (the
//! audit chain's head is read under the database's write lock, so the two writers never give
//! two entries the same place) and the one chain they wrote together verifies; and a version
//! written through one is read at once through the other, although each keeps the current
//! versions it read in memory.

use crate::{Serve, free_port, keysafe, ok, run, spawn_serve_at, wait_healthy};
use keysafe_client::client::{ClientOptions, FailoverOptions};
use keysafe_client::{ClientHome, KeysafeClient, Precondition};
use keysafe_proto::DepositName;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WRITERS_PER_SERVER: usize = 4;
const PUTS_PER_WRITER: usize = 40;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

async fn register(tmp: &Path, secret_file: &Path, server: &str, home: &Path) {
    let mut c = keysafe(tmp);
    c.args([
        "register",
        "--server",
        server,
        "--org",
        "acme",
        "--auth-file",
    ])
    .arg(secret_file)
    .arg("--home")
    .arg(home);
    ok(&run(c).await);
}

/// Two `keysafe serve` processes (on 127.0.0.2 and 127.0.0.3) over one fresh data directory
/// under `t`, both healthy, and organisation `acme` with its secret in a file.
struct TwoServers {
    _a: Serve,
    _b: Serve,
    dir: PathBuf,
    url_a: String,
    url_b: String,
    secret_file: PathBuf,
}

async fn two_servers(t: &Path) -> TwoServers {
    let dir = t.join("data");
    let (pa, pb) = (free_port("127.0.0.2"), free_port("127.0.0.3"));
    let mut c = keysafe(t);
    c.args(["init", "--data-dir"])
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.2:{pa}")]);
    ok(&run(c).await);
    let (a, url_a) = spawn_serve_at(t, &dir, "127.0.0.2", pa);
    let (b, url_b) = spawn_serve_at(t, &dir, "127.0.0.3", pb);
    wait_healthy(&url_a).await;
    wait_healthy(&url_b).await;

    let mut c = keysafe(t);
    c.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["org", "add", "acme", "--json"]);
    let secret = json(&ok(&run(c).await))["auth_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_file = t.join("secret");
    std::fs::write(&secret_file, &secret).unwrap();
    TwoServers {
        _a: a,
        _b: b,
        dir,
        url_a,
        url_b,
        secret_file,
    }
}

/// A client that never retries, so every refusal the server answers is counted here.
fn no_retry_client(home: &Path) -> KeysafeClient {
    let home = ClientHome::load(home).unwrap();
    KeysafeClient::from_home_with(
        &home,
        &ClientOptions {
            use_cache: false,
            failover: FailoverOptions {
                retries: 0,
                ..FailoverOptions::default()
            },
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_on_one_data_dir_write_concurrently_without_a_single_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let TwoServers {
        dir,
        url_a,
        url_b,
        secret_file,
        _a,
        _b,
    } = two_servers(t).await;
    // One client per server: each process writes (and audits) on its own.
    let mut clients = Vec::new();
    for (i, url) in [&url_a, &url_b].into_iter().enumerate() {
        let home = t.join(format!("home{i}"));
        register(t, &secret_file, url, &home).await;
        clients.push(no_retry_client(&home));
    }

    let mut tasks = Vec::new();
    for (s, client) in clients.iter().enumerate() {
        for w in 0..WRITERS_PER_SERVER {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..PUTS_PER_WRITER {
                    let name = DepositName::parse(&format!("s{s}/w{w}/k{i}")).unwrap();
                    if let Err(e) = client
                        .put(
                            &name,
                            format!("{s}-{w}-{i}").into_bytes(),
                            Precondition::None,
                        )
                        .await
                    {
                        failures.push(format!("put {name}: {e}"));
                        continue;
                    }
                    // A read: its entry goes through the batched audit queue, the other path
                    // that appends to the chain.
                    if let Err(e) = client.get(&name, None).await {
                        failures.push(format!("get {name}: {e}"));
                    }
                }
                failures
            }));
        }
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of {} operations failed, first: {:?}",
        failures.len(),
        2 * 2 * WRITERS_PER_SERVER * PUTS_PER_WRITER,
        &failures[..failures.len().min(5)]
    );

    // The one chain both processes appended to verifies, entry by entry. The reads' entries
    // are queued; give the queues a moment to drain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = keysafe(t);
    c.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["audit", "verify", "--json"]);
    let v = json(&ok(&run(c).await));
    assert!(v["broken"].is_null(), "{v}");
    let entries = v["entries"].as_u64().unwrap();
    assert!(
        entries >= (2 * 2 * WRITERS_PER_SERVER * PUTS_PER_WRITER) as u64,
        "{v}"
    );
}

/// A client of the one home in `home`, talking to `url` only.
fn client_at(home: &Path, url: &str) -> KeysafeClient {
    let mut h = ClientHome::load(home).unwrap();
    h.config.servers = vec![url.to_owned()];
    KeysafeClient::from_home_with(
        &h,
        &ClientOptions {
            use_cache: false,
            failover: FailoverOptions {
                retries: 0,
                ..FailoverOptions::default()
            },
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

async fn wait_rewrapped(admin: &KeysafeClient) -> keysafe_proto::api::KeyringStatusInfo {
    for _ in 0..600 {
        let s = admin.keyring_status().await.unwrap();
        if s.rewrap_pending == 0 {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the re-wrap job did not finish");
}

/// Rotation, re-wrap and retirement through one server reach the other server on the same data
/// directory: it reads every deposit (no false `integrity_error` for rows on a keyring version
/// it did not load at start) and its writes use the version the store has now (never the
/// retired one, which the store refuses). A rotation through the second server starts from the
/// stored keyring too.
#[tokio::test(flavor = "multi_thread")]
async fn keyring_changes_through_one_server_reach_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let TwoServers {
        dir,
        url_a,
        url_b,
        secret_file,
        _a,
        _b,
    } = two_servers(t).await;
    let home = t.join("home");
    register(t, &secret_file, &url_a, &home).await;
    let (via_a, via_b) = (client_at(&home, &url_a), client_at(&home, &url_b));
    let admin_home = dir.join("admin");
    let (admin_a, admin_b) = (
        client_at(&admin_home, &url_a),
        client_at(&admin_home, &url_b),
    );

    let name = |i: usize| DepositName::parse(&format!("k{i}")).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..40 {
        let v = format!("value {i}").into_bytes();
        via_a
            .put(&name(i), v.clone(), Precondition::None)
            .await
            .unwrap();
        expected.insert(i, v);
    }
    // Both servers read them (both hold keyring version 1).
    for (i, v) in &expected {
        assert_eq!(
            &via_b.get(&name(*i), None).await.unwrap().payload[..],
            &v[..]
        );
    }

    // Through A: rotate, wait for the re-wrap, retire version 1.
    assert_eq!(admin_a.keyring_rotate().await.unwrap().version, 2);
    wait_rewrapped(&admin_a).await;
    admin_a.keyring_retire(1).await.unwrap();

    // B reads every deposit, now on version 2 only, and its writes land.
    for (i, v) in &expected {
        let got = via_b.get(&name(*i), None).await;
        assert_eq!(&got.unwrap().payload[..], &v[..], "k{i} through B");
    }
    for i in 40..50 {
        let v = format!("written through B {i}").into_bytes();
        via_b
            .put(&name(i), v.clone(), Precondition::None)
            .await
            .unwrap();
        expected.insert(i, v);
    }
    // A new version of an existing deposit through B too.
    let v = b"second version through B".to_vec();
    via_b
        .put(&name(0), v.clone(), Precondition::None)
        .await
        .unwrap();
    expected.insert(0, v);

    // B rotates next: from the stored keyring (version 3, not a second version 2).
    assert_eq!(admin_b.keyring_rotate().await.unwrap().version, 3);
    for i in 50..55 {
        let v = format!("on version 3 {i}").into_bytes();
        via_b
            .put(&name(i), v.clone(), Precondition::None)
            .await
            .unwrap();
        expected.insert(i, v);
    }
    let s = wait_rewrapped(&admin_b).await;
    assert_eq!(s.current, Some(3));
    // A reads what B wrote with version 3, and everything else.
    for (i, v) in &expected {
        let got = via_a.get(&name(*i), None).await;
        assert_eq!(&got.unwrap().payload[..], &v[..], "k{i} through A");
    }
    admin_a.keyring_retire(2).await.unwrap();
    for (i, v) in &expected {
        assert_eq!(
            &via_b.get(&name(*i), None).await.unwrap().payload[..],
            &v[..]
        );
        assert_eq!(
            &via_a.get(&name(*i), None).await.unwrap().payload[..],
            &v[..]
        );
    }
    let s = admin_b.keyring_status().await.unwrap();
    assert_eq!(s.versions.len(), 1, "{s:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_written_through_one_server_is_read_at_once_through_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let TwoServers {
        url_a,
        url_b,
        secret_file,
        _a,
        _b,
        ..
    } = two_servers(t).await;
    let pin = wait_healthy(&url_a).await.fingerprint;
    assert_eq!(wait_healthy(&url_b).await.fingerprint, pin);
    let home = t.join("home");
    register(t, &secret_file, &url_a, &home).await;
    // One home's clients for each server share its sequenced token: one client alternating
    // between servers.
    let (a, b) = (client_at(&home, &url_a), client_at(&home, &url_b));
    let name = DepositName::parse("db/key").unwrap();

    for round in 1..=20u32 {
        // Alternate the server that writes; both have read (and kept) the previous version.
        let (writer, reader) = if round % 2 == 1 { (&a, &b) } else { (&b, &a) };
        let payload = format!("version {round}");
        writer
            .put(&name, payload.clone().into_bytes(), Precondition::None)
            .await
            .unwrap();
        for (server, c) in [("the other", reader), ("the writer", writer)] {
            for _ in 0..2 {
                let got = c.get(&name, None).await.unwrap();
                assert_eq!(
                    (got.version.get(), got.payload.as_ref()),
                    (u64::from(round), payload.as_bytes()),
                    "round {round}, read through {server}"
                );
            }
        }
    }

    // A soft delete through one server is seen through the other at once.
    a.delete(&name).await.unwrap();
    let refused = b.get(&name, None).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(keysafe_proto::ErrorCode::Deleted),
        "read through the other server after a delete: {refused}"
    );
}
