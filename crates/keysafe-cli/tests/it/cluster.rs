//! Two keysafe nodes on one PostgreSQL database, through the built binary: the first node
//! `init`s the database, the second `init --join`s it with a copy of the root key and nothing
//! else, both `serve` (127.0.0.2 and 127.0.0.3). Then: one pin covers both nodes; `admin
//! cluster status` lists both; a client that alternates between the nodes on every request,
//! also concurrently, is never taken for a clone; a client disabled, a group member removed,
//! a keyring rotation and retirement through node A take effect on node B within the
//! documented bound (the change announcement, or the polled change serial when the
//! announcement is missed); `audit verify` checks the entries both nodes wrote.

use crate::{free_port, keysafe, ok, run, spawn_serve_at, wait_healthy};
use keysafe_client::client::{ClientOptions, ServerSpec};
use keysafe_client::{KeysafeClient, Precondition, ServerTrust};
use keysafe_proto::{ClientFingerprint, DepositName, ErrorCode};
use keysafe_testpg::{ClusterOptions, TestCluster};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How soon a change made through one node must take effect on the other: the documented
/// bound (`cluster.change_poll_interval`, 1 s by default: the polled change serial catches an
/// announcement that was missed) plus time for a loaded test machine to answer.
const BOUND: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_secs(4);

fn admin(tmp: &Path, dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = keysafe(tmp);
    c.args(["admin", "--data-dir"]).arg(dir).args(args);
    c
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Names this node in the audit entries it writes (both nodes run on one host here).
fn set_audit_node(dir: &Path, name: &str) {
    let path = dir.join("keysafe.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    assert!(toml.contains("node = \"\""), "{toml}");
    std::fs::write(
        &path,
        toml.replacen("node = \"\"", &format!("node = {name:?}"), 1),
    )
    .unwrap();
}

/// A client of `home`'s identity that talks to `url` only (the token state is the home's, so
/// clients of one home on different nodes are one client alternating between nodes).
fn via(home: &Path, url: &str, fp: &ClientFingerprint) -> KeysafeClient {
    let identity = keysafe_client::ClientHome::read_identity(home).unwrap();
    KeysafeClient::with_servers_and_home_token(
        &[ServerSpec {
            url: url.to_owned(),
            trust: ServerTrust::Fingerprint(fp.clone()),
        }],
        Some(&identity),
        &ClientOptions {
            use_cache: false,
            ..ClientOptions::default()
        },
        home,
    )
    .unwrap()
}

async fn register(tmp: &Path, secret: &Path, urls: &[&str], home: &Path, name: &str) {
    let mut c = keysafe(tmp);
    c.arg("register");
    for u in urls {
        c.args(["--server", u]);
    }
    c.args(["--org", "acme", "--auth-file"])
        .arg(secret)
        .arg("--home")
        .arg(home)
        .args(["--name", name]);
    ok(&run(c).await);
}

/// Waits until `check` holds, at most `BOUND + SLACK`; returns how long it took.
async fn within_bound<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < BOUND + SLACK,
            "{what}: not in effect on the other node after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Nodes {
    pg: TestCluster,
    db: String,
    dir_a: PathBuf,
    dir_b: PathBuf,
    url_a: String,
    url_b: String,
}

/// Node A initialises the database; node B joins it with a copy of the root key.
async fn two_nodes(t: &Path) -> Nodes {
    let pg = TestCluster::start(ClusterOptions::default())
        .unwrap_or_else(|e| panic!("this test needs a PostgreSQL server: {e}"));
    let db = pg.create_database("").unwrap();
    let url = pg.url(&db);
    let (dir_a, dir_b) = (t.join("node-a"), t.join("node-b"));
    let (pa, pb) = (free_port("127.0.0.2"), free_port("127.0.0.3"));
    let mut c = keysafe(t);
    c.args(["init", "--data-dir"])
        .arg(&dir_a)
        .args(["--listen", &format!("127.0.0.2:{pa}")])
        .args(["--storage", &url, "--json"]);
    let a = json(&ok(&run(c).await));
    assert_eq!(a["joined"], false, "{a}");

    // Joining needs the root key: without it, a clear refusal and nothing written.
    let mut c = keysafe(t);
    c.args(["init", "--data-dir"])
        .arg(&dir_b)
        .args(["--listen", &format!("127.0.0.3:{pb}")])
        .args(["--storage", &url, "--join"]);
    let err = crate::fails_with(&run(c).await, 1);
    assert!(err.contains("--root-key-file"), "{err}");
    assert!(!dir_b.exists());
    // A different root key does not open the keyring: refused, nothing written.
    let wrong = t.join("wrong.key");
    {
        use std::io::Write;
        let mut f = keysafe_core::seal::open_options_private()
            .open(&wrong)
            .unwrap();
        f.write_all(&[7u8; 32]).unwrap();
    }
    let mut c = keysafe(t);
    c.args(["init", "--data-dir"])
        .arg(&dir_b)
        .args(["--listen", &format!("127.0.0.3:{pb}")])
        .args(["--storage", &url, "--join", "--root-key-file"])
        .arg(&wrong);
    let out = run(c).await;
    assert!(!out.status.success());
    assert!(!dir_b.exists());

    // The operator copies the root key to the new host (mode 0600) and joins.
    let key_copy = t.join("copied-root.key");
    std::fs::copy(dir_a.join("root.key"), &key_copy).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut c = keysafe(t);
    c.args(["init", "--data-dir"])
        .arg(&dir_b)
        .args(["--listen", &format!("127.0.0.3:{pb}")])
        .args(["--storage", &url, "--join", "--root-key-file"])
        .arg(&key_copy)
        .arg("--json");
    let b = json(&ok(&run(c).await));
    assert_eq!(b["joined"], true, "{b}");
    assert_eq!(b["server_fingerprint"], a["server_fingerprint"], "{b}");
    assert_ne!(b["node_id"], a["node_id"]);
    // The joined node did not need node A's data directory: it has no database file, and its
    // TLS key is the cluster's, taken from the database.
    assert!(!dir_b.join("keysafe.db").exists());
    assert_eq!(
        std::fs::read(dir_a.join("tls/server.crt")).ok(),
        std::fs::read(dir_b.join("tls/server.crt")).ok()
    );
    set_audit_node(&dir_a, "node-a");
    set_audit_node(&dir_b, "node-b");
    Nodes {
        pg,
        db,
        dir_a,
        dir_b,
        url_a: format!("https://127.0.0.2:{pa}"),
        url_b: format!("https://127.0.0.3:{pb}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_one_database_share_identity_changes_and_the_audit_trail() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let n = two_nodes(t).await;
    let (srv_a, _) = spawn_serve_at(t, &n.dir_a, "127.0.0.2", port_of(&n.url_a));
    let (srv_b, _) = spawn_serve_at(t, &n.dir_b, "127.0.0.3", port_of(&n.url_b));
    let fp = wait_healthy(&n.url_a).await.fingerprint;
    assert_eq!(
        wait_healthy(&n.url_b).await.fingerprint,
        fp,
        "one pin covers both nodes"
    );

    // Both nodes record heartbeats; either node's administrator sees both.
    within_bound("both heartbeats", || async {
        let out = run(admin(t, &n.dir_b, &["cluster", "status", "--json"])).await;
        out.status.success()
            && json(&String::from_utf8_lossy(&out.stdout))["nodes"]
                .as_array()
                .is_some_and(|a| a.len() == 2)
    })
    .await;
    let v = json(&ok(&run(admin(
        t,
        &n.dir_a,
        &["cluster", "status", "--json"],
    ))
    .await));
    let addresses: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap())
        .collect();
    assert!(addresses.contains(&n.url_a.as_str()), "{v}");
    assert!(addresses.contains(&n.url_b.as_str()), "{v}");
    for node in v["nodes"].as_array().unwrap() {
        assert_eq!(node["seal"], "unsealed", "{v}");
        assert_eq!(
            node["writes_to"],
            format!("127.0.0.1:{}", n.pg.port()),
            "{v}"
        );
    }
    let text = ok(&run(admin(t, &n.dir_a, &["cluster", "status"])).await);
    assert!(text.contains(&n.url_b), "{text}");

    // Clients registered through node A.
    let out = ok(&run(admin(t, &n.dir_a, &["org", "add", "acme", "--json"])).await);
    let secret = t.join("acme.secret");
    std::fs::write(&secret, json(&out)["auth_secret"].as_str().unwrap()).unwrap();
    let (home1, home2) = (t.join("home1"), t.join("home2"));
    register(t, &secret, &[&n.url_a, &n.url_b], &home1, "web-1").await;
    register(t, &secret, &[&n.url_b, &n.url_a], &home2, "web-2").await;
    let fp1 = keysafe_client::ClientHome::read_identity(&home1)
        .unwrap()
        .fingerprint;
    let fp2 = keysafe_client::ClientHome::read_identity(&home2)
        .unwrap()
        .fingerprint;
    let (c1a, c1b) = (via(&home1, &n.url_a, &fp), via(&home1, &n.url_b, &fp));
    let (c2a, c2b) = (via(&home2, &n.url_a, &fp), via(&home2, &n.url_b, &fp));

    // Alternating nodes on every request, sequentially: never a clone.
    let mut written = Vec::new();
    for i in 0..30 {
        let c = if i % 2 == 0 { &c1a } else { &c1b };
        let name = DepositName::parse(&format!("alt/{i}")).unwrap();
        let payload = format!("payload {i}").into_bytes();
        c.put(&name, payload.clone(), Precondition::None)
            .await
            .unwrap_or_else(|e| panic!("put {i}: {e}"));
        let other = if i % 2 == 0 { &c1b } else { &c1a };
        assert_eq!(
            other.get(&name, None).await.unwrap().payload.as_ref(),
            &payload[..]
        );
        written.push((name, payload));
    }
    // ... and concurrently: eight tasks, each alternating.
    let mut tasks = Vec::new();
    for k in 0..8 {
        let (x, y) = (via(&home1, &n.url_a, &fp), via(&home1, &n.url_b, &fp));
        let names: Vec<_> = written.clone();
        tasks.push(tokio::spawn(async move {
            for (j, (name, payload)) in names.iter().enumerate().skip(k).step_by(4) {
                let c = if (j + k) % 2 == 0 { &x } else { &y };
                let got = c
                    .get(name, None)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                if got.payload.as_ref() != &payload[..] {
                    return Err(format!("{name}: wrong payload"));
                }
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    c1a.get(&written[0].0, None).await.unwrap();
    c1b.get(&written[1].0, None).await.unwrap();

    // A group made through node A; its member's view through node B follows a removal.
    ok(&run(admin(
        t,
        &n.dir_a,
        &[
            "group",
            "add",
            "ops",
            "--org",
            "acme",
            "--member",
            fp1.as_str(),
            "--member",
            fp2.as_str(),
        ],
    ))
    .await);
    let in_group = |c: &KeysafeClient| {
        let c = c.clone();
        async move {
            c.groups()
                .await
                .map(|g| g.groups.iter().any(|g| g.name.as_str() == "ops"))
                .unwrap_or(false)
        }
    };
    assert!(in_group(&c2b).await);
    ok(&run(admin(
        t,
        &n.dir_a,
        &[
            "group",
            "remove-member",
            "ops",
            "--org",
            "acme",
            fp2.as_str(),
        ],
    ))
    .await);
    within_bound("a group member removed", || {
        let c = c2b.clone();
        async move { !in_group(&c).await }
    })
    .await;
    assert!(in_group(&c1b).await);

    // A client disabled through node A is refused by node B (the announcement).
    ok(&run(admin(t, &n.dir_a, &["client", "disable", fp2.as_str()])).await);
    let took =
        within_bound("a disabled client", || {
            let c = c2b.clone();
            async move {
                matches!(c.whoami().await, Err(e) if e.code() == Some(ErrorCode::ClientDisabled))
            }
        })
        .await;
    eprintln!("disable through A took effect on B after {took:?}");
    assert_eq!(
        c2a.whoami().await.unwrap_err().code(),
        Some(ErrorCode::ClientDisabled)
    );

    // An announcement that never came (a change written behind the nodes' back, as if the
    // NOTIFY had been lost): the polled change serial catches it within the bound. A row
    // written outside keysafe carries no valid MAC (ADR 0013), so what takes effect on B is
    // its refusal; put back as keysafe wrote it, it verifies again.
    let before = c1b.whoami().await.unwrap();
    assert_eq!(before.fingerprint, fp1);
    let behind_the_back = |state: &str| {
        format!(
            "BEGIN; UPDATE clients SET state = '{state}' WHERE fingerprint = '{fp1}'; \
                 UPDATE cluster_changes SET serial = serial + 1; COMMIT;"
        )
    };
    n.pg.psql(&n.db, &behind_the_back("disabled")).unwrap();
    within_bound("a change without an announcement", || {
        let c = c1b.clone();
        async move {
            matches!(c.whoami().await, Err(e) if e.code() == Some(ErrorCode::IntegrityError))
        }
    })
    .await;
    n.pg.psql(&n.db, &behind_the_back("active")).unwrap();
    within_bound("the row as keysafe wrote it", || {
        let c = c1b.clone();
        async move { c.whoami().await.is_ok() }
    })
    .await;
    // Disabled through A, enabled through B.
    ok(&run(admin(t, &n.dir_a, &["client", "disable", fp1.as_str()])).await);
    within_bound("a disabled client", || {
        let c = c1b.clone();
        async move {
            matches!(c.whoami().await, Err(e) if e.code() == Some(ErrorCode::ClientDisabled))
        }
    })
    .await;
    ok(&run(admin(t, &n.dir_b, &["client", "enable", fp1.as_str()])).await);
    within_bound("a client enabled through B, seen by A", || {
        let c = c1a.clone();
        async move { c.whoami().await.is_ok() }
    })
    .await;

    // Keyring rotation through node A while node B takes puts; then the old version is
    // retired. Node B keeps serving every deposit and accepting puts throughout.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let writer = {
        let c = via(&home1, &n.url_b, &fp);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !*stop_rx.borrow_and_update() {
                let name = DepositName::parse(&format!("during/{i}")).unwrap();
                let payload = format!("during rotation {i}").into_bytes();
                c.put(&name, payload.clone(), Precondition::None)
                    .await
                    .map_err(|e| format!("put {name} through node B: {e}"))?;
                acked.push((name, payload));
                i += 1;
                let _ = tokio::time::timeout(Duration::from_millis(50), stop_rx.changed()).await;
            }
            Ok::<_, String>(acked)
        })
    };
    ok(&run(admin(t, &n.dir_a, &["keyring", "rotate", "--wait"])).await);
    ok(&run(admin(t, &n.dir_a, &["keyring", "retire", "1"])).await);
    // Node B's keyring follows: a put right after the retirement uses version 2.
    let after = DepositName::parse("after/retire").unwrap();
    c1b.put(&after, b"after".to_vec(), Precondition::None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(true).unwrap();
    let acked = writer.await.unwrap().unwrap();
    assert!(!acked.is_empty());
    written.extend(acked);
    written.push((after, b"after".to_vec()));
    for (name, payload) in &written {
        for c in [&c1a, &c1b] {
            assert_eq!(
                &c.get(name, None)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
                    .payload,
                payload
            );
        }
    }
    let status = json(&ok(&run(admin(
        t,
        &n.dir_b,
        &["keyring", "status", "--json"],
    ))
    .await));
    assert_eq!(status["current"], 2, "{status}");
    assert_eq!(status["versions"].as_array().unwrap().len(), 1, "{status}");

    // The audit trail holds entries both nodes wrote, and verifies as one chain.
    let nodes =
        n.pg.psql(
            &n.db,
            "SELECT string_agg(DISTINCT node, ',' ORDER BY node) FROM audit_log",
        )
        .unwrap();
    assert_eq!(nodes, "node-a,node-b");
    for dir in [&n.dir_a, &n.dir_b] {
        let out = ok(&run(admin(t, dir, &["audit", "verify"])).await);
        assert!(out.contains("Audit trail verified"), "{out}");
    }
    // An audit entry altered in the database: verification through either node fails.
    n.pg
        .psql(
            &n.db,
            "UPDATE audit_log SET node = 'node-x' WHERE seq = (SELECT max(seq) FROM audit_log WHERE node = 'node-b')",
        )
        .unwrap();
    let out = run(admin(t, &n.dir_a, &["audit", "verify"])).await;
    assert!(!out.status.success());
    srv_a.kill();
    srv_b.kill();
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// An HSM key destroyed seals every node that uses it. Both nodes use one HSM token (one
/// SoftHSM2 token directory, as nodes share a network HSM); node A checks its key every 200 ms,
/// node B only every 30 s (the default), so B sealing within the bound shows that A's
/// announcement made B check its own key at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_destroyed_hsm_key_seals_every_node() {
    use crate::hsm::SoftHsm;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let hsm = SoftHsm::new(t, "cluster-token");
    let pg = TestCluster::start(ClusterOptions::default())
        .unwrap_or_else(|e| panic!("this test needs a PostgreSQL server: {e}"));
    let db = pg.create_database("").unwrap();
    let url = pg.url(&db);
    let (dir_a, dir_b) = (t.join("node-a"), t.join("node-b"));
    // Addresses of their own: other cluster tests run at the same time on 127.0.0.2 and .3.
    let (pa, pb) = (free_port("127.0.0.4"), free_port("127.0.0.5"));
    let mut servers = Vec::new();
    for (dir, ip, port, join) in [
        (&dir_a, "127.0.0.4", pa, false),
        (&dir_b, "127.0.0.5", pb, true),
    ] {
        let mut c = hsm.cmd(t);
        c.args(["init", "--data-dir"])
            .arg(dir)
            .args(["--listen", &format!("{ip}:{port}")])
            .args(["--storage", &url, "--seal", "pkcs11"])
            .args(["--pkcs11-token", "cluster-token", "--pkcs11-pin-file"])
            .arg(&hsm.pin_file);
        if join {
            c.arg("--join");
        }
        ok(&run(c).await);
        assert!(!dir.join("root.key").exists());
    }
    let path = dir_a.join("keysafe.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    assert!(toml.contains("check_interval = \"30s\""), "{toml}");
    std::fs::write(
        &path,
        toml.replace("check_interval = \"30s\"", "check_interval = \"200ms\""),
    )
    .unwrap();
    for dir in [&dir_a, &dir_b] {
        servers.push(crate::hsm::Server::start(hsm.cmd(t), dir));
    }
    let (url_a, url_b) = (servers[0].1.clone(), servers[1].1.clone());
    let logs = [dir_a.with_extension("log"), dir_b.with_extension("log")];
    for u in [&url_a, &url_b] {
        assert_eq!(
            wait_node(u, "ok", &logs).await.seal.as_deref(),
            Some("pkcs11")
        );
    }

    hsm.destroy_key("cluster-token", "keysafe-seal");
    let h = wait_node(&url_a, "sealed", &logs).await;
    assert!(h.sealed_reason.unwrap().contains("destroyed"));
    let took = within_bound(
        "node B sealed after node A found the HSM key destroyed",
        || {
            let u = url_b.clone();
            async move {
                crate::hsm::health(&u)
                    .await
                    .is_some_and(|h| h.status == "sealed")
            }
        },
    )
    .await;
    eprintln!("node B sealed {took:?} after node A");
    let h = crate::hsm::health(&url_b).await.unwrap();
    assert!(
        h.sealed_reason.unwrap().contains("destroyed"),
        "{:?}",
        h.status
    );
    drop(servers);
    drop(pg);
}

/// Waits (up to 90 s) until the node at `url` answers health with `status`; on timeout, fails
/// with the last answer and the nodes' logs.
async fn wait_node(url: &str, status: &str, logs: &[PathBuf]) -> keysafe_proto::api::Health {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(90) {
        if let Some(h) = crate::hsm::health(url).await {
            if h.status == status {
                return h;
            }
            last = Some(h);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut text = String::new();
    for l in logs {
        text.push_str(&format!("--- {}\n", l.display()));
        text.push_str(&std::fs::read_to_string(l).unwrap_or_default());
    }
    panic!("{url} never reported {status}; last answer {last:?}\n{text}");
}
