//! The cluster under a real database failover: PostgreSQL as a primary with a synchronous
//! standby managed by pg_auto_failover (a monitor and two keepers, `pg_autoctl` as the
//! `postgres` user, fast health checks so the test stays CI-length), two `keysafe serve`
//! nodes on a multi-host URL with `target_session_attrs=read-write`. The seven steps of the
//! cluster test (docs/operations.md):
//! 1. concurrent puts through both nodes, recording every acknowledged (name, bytes);
//! 2. kill -9 of the primary's keeper and postmaster; the monitor promotes the standby; the
//!    nodes find it by themselves;
//! 3. every acknowledged write reads back exactly through either node; reads kept working
//!    during the outage, and writes got `503 read_only` (never another error, never a hang);
//!    the KMS gateway decrypted during the outage and refused a key creation with an error
//!    that says to retry;
//! 4. kill -9 of keysafe node A: a client configured with both nodes sees no failed get; node A
//!    restarts and rejoins with no manual step;
//! 5. a client disabled through node A is refused by node B within the documented bound;
//! 6. a keyring rotation through node A and the retirement of the old version: node B serves
//!    every deposit and accepts puts throughout;
//! 7. `audit verify` over the trail both nodes wrote (including what was spooled while the
//!    database was read-only);
//! 8. the killed database server rejoins as the new primary's synchronous standby and receives
//!    new writes; the replication metrics (which the example alert rules use) show it.
//!
//! It prints the write-unavailability window (kill to first accepted write).

use crate::pgaf::{Formation, psql};
use crate::{free_port, keysafe, ok, run, spawn_serve_at, wait_healthy};
use keysafe_client::client::{ClientOptions, FailoverOptions, ServerSpec};
use keysafe_client::{KeysafeClient, Precondition, ServerTrust};
use keysafe_proto::{ClientFingerprint, DepositName, ErrorCode};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request that takes longer than this during the failover counts as a hang.
const HANG: Duration = Duration::from_secs(20);
fn admin(tmp: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = keysafe(tmp);
    c.args(["admin", "--data-dir"]).arg(dir).args(args);
    c
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn client(home: &Path, urls: &[&str], fp: &ClientFingerprint) -> KeysafeClient {
    let identity = keysafe_client::ClientHome::read_identity(home).unwrap();
    let servers: Vec<ServerSpec> = urls
        .iter()
        .map(|u| ServerSpec {
            url: (*u).to_owned(),
            trust: ServerTrust::Fingerprint(fp.clone()),
        })
        .collect();
    KeysafeClient::with_servers_and_home_token(
        &servers,
        Some(&identity),
        &ClientOptions {
            use_cache: false,
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            failover: FailoverOptions {
                retries: 2,
                backoff_base: Duration::from_millis(50),
                backoff_max: Duration::from_millis(200),
                reprobe_after: Duration::from_secs(2),
            },
            ..ClientOptions::default()
        },
        home,
    )
    .unwrap()
}

/// The Prometheus text a `keysafe serve` child exposes, found through the address its log
/// announced ("metrics are served").
fn scrape(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.contains("metrics are served"))
        .unwrap_or_else(|| panic!("no metrics address in {}", log.display()));
    let url = &line[line.find("http://127.0.0.1:").unwrap() + "http://127.0.0.1:".len()..];
    let port: u16 = url.split('/').next().unwrap().parse().unwrap();
    crate::kms_cmd::http(
        port,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("the metrics listener answers")
}

/// The samples of one series in Prometheus text: (labels, value).
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (series, labels) = match key.split_once('{') {
                Some((s, rest)) => (s, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            (series == name).then(|| (labels.to_owned(), value.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

/// Waits until the node's metrics show one connected standby with a known lag.
async fn wait_for_one_standby_in_metrics(log: &Path) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(log);
        let replicas = samples(&text, "keysafe_database_replicas");
        let replay = samples(&text, "keysafe_database_replica_replay_lag_seconds");
        let bytes = samples(&text, "keysafe_database_replica_lag_bytes");
        let known = |v: &[(String, f64)]| {
            v.iter()
                .any(|(l, x)| l.starts_with("standby=") && x.is_finite() && *x >= 0.0)
        };
        if replicas == [(String::new(), 1.0)] && known(&replay) && known(&bytes) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no standby in the metrics: {replicas:?} {replay:?} {bytes:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One plain HTTP/1.1 request to the KMS gateway as `alice` (pseudo authentication on
/// loopback); the status and the body.
fn gateway(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Longer than kms_cmd::http's 10 s: a read during the failover may take that long.
    s.set_read_timeout(Some(HANG)).unwrap();
    write!(
        s,
        "{method} {path}{sep}user.name=alice HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    acked: BTreeMap<String, Vec<u8>>,
    read_only: u64,
    /// Puts that were in flight when the primary was killed and answered `unavailable`.
    in_flight_at_kill: u64,
    /// Errors other than `read_only`, with when they happened.
    other_errors: Vec<String>,
    read_ok: u64,
    /// Reads answered between the kill and the first write accepted after it.
    read_ok_during_outage: u64,
    read_errors: Vec<String>,
    first_write_after_kill: Option<Instant>,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_survives_a_database_failover_and_a_node_failure() {
    let tmp = tempfile::Builder::new()
        .prefix("keysafe-pgaf")
        .tempdir_in("/tmp")
        .unwrap();
    let t = tmp.path();
    let pgaf_root = t.join("pgaf");
    let formation = tokio::task::spawn_blocking({
        let r = pgaf_root.clone();
        move || Formation::start(&r)
    })
    .await
    .unwrap();
    let formation = Arc::new(formation);
    let [p1, p2] = formation.ports;
    let url = format!(
        "postgres://postgres@127.0.0.1:{p1},127.0.0.1:{p2}/keysafe?target_session_attrs=read-write&connect_timeout=2"
    );

    // Two keysafe nodes: A initialises, B joins with a copy of the root key.
    let (dir_a, dir_b) = (t.join("node-a"), t.join("node-b"));
    let (pa, pb) = (free_port("127.0.0.2"), free_port("127.0.0.3"));
    let mut c = keysafe(t);
    c.args(["init", "--data-dir"])
        .arg(&dir_a)
        .args(["--listen", &format!("127.0.0.2:{pa}")])
        .args(["--storage", &url]);
    ok(&run(c).await);
    let key_copy = t.join("root-copy.key");
    std::fs::copy(dir_a.join("root.key"), &key_copy).unwrap();
    let mut c = keysafe(t);
    c.args(["init", "--data-dir"])
        .arg(&dir_b)
        .args(["--listen", &format!("127.0.0.3:{pb}")])
        .args(["--storage", &url, "--join", "--root-key-file"])
        .arg(&key_copy);
    ok(&run(c).await);
    for (dir, name) in [(&dir_a, "node-a"), (&dir_b, "node-b")] {
        let path = dir.join("keysafe.toml");
        let toml = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            toml.replacen("node = \"\"", &format!("node = {name:?}"), 1),
        )
        .unwrap();
    }
    let (srv_a, url_a) = spawn_serve_at(t, &dir_a, "127.0.0.2", pa);
    let (srv_b, url_b) = spawn_serve_at(t, &dir_b, "127.0.0.3", pb);
    let mut srv_a = Some(srv_a);
    let fp = wait_healthy(&url_a).await.fingerprint;
    wait_healthy(&url_b).await;

    let out = ok(&run(admin(t, &dir_a, &["org", "add", "acme", "--json"])).await);
    let secret = t.join("acme.secret");
    std::fs::write(&secret, json(&out)["auth_secret"].as_str().unwrap()).unwrap();
    let mut homes = Vec::new();
    for (i, first) in [&url_a, &url_b].into_iter().enumerate() {
        let home = t.join(format!("home{i}"));
        let other = if i == 0 { &url_b } else { &url_a };
        let mut c = keysafe(t);
        c.args([
            "register", "--server", first, "--server", other, "--org", "acme",
        ])
        .arg("--auth-file")
        .arg(&secret)
        .arg("--home")
        .arg(&home);
        ok(&run(c).await);
        homes.push(home);
    }

    // The KMS gateway, as a client of its own with both nodes, its key cache off so that every
    // key read goes to keysafe.
    let gw_home = t.join("gw");
    let mut c = keysafe(t);
    c.args([
        "register", "--server", &url_a, "--server", &url_b, "--org", "acme",
    ])
    .arg("--auth-file")
    .arg(&secret)
    .arg("--home")
    .arg(&gw_home);
    ok(&run(c).await);
    std::fs::create_dir(t.join("kms-audit")).unwrap();
    let gw_cfg = t.join("kms.toml");
    std::fs::write(
        &gw_cfg,
        "audit_log = \"kms-audit/kms-audit.log\"\nkey_admins = \"alice\"\n[cache]\nenable = false\n",
    )
    .unwrap();
    let gw_port = free_port("127.0.0.1");
    let mut c = keysafe(t);
    c.args(["kms", "--home"])
        .arg(&gw_home)
        .args(["--listen", &format!("127.0.0.1:{gw_port}"), "--config"])
        .arg(&gw_cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(t.join("kms.log")).unwrap());
    let _gw = crate::Serve(Some(c.spawn().unwrap()));
    let created = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", gw_port)).is_ok() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no gateway");
            std::thread::sleep(Duration::from_millis(100));
        }
        let (st, b) = gateway(
            gw_port,
            "POST",
            "/kms/v1/keys",
            r#"{"name":"fo","cipher":"AES/CTR/NoPadding","length":128}"#,
        );
        assert_eq!(st, 201, "{b}");
        let (st, b) = gateway(
            gw_port,
            "GET",
            "/kms/v1/key/fo/_eek?eek_op=generate&num_keys=1",
            "",
        );
        assert_eq!(st, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        v[0].clone()
    })
    .await
    .unwrap();

    // 1. Concurrent puts through both nodes (each writer's own client, first server its node),
    //    and readers of what was acknowledged, until told to stop.
    let tally = Arc::new(Mutex::new(Tally::default()));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    // Set as the kill begins: a put that fails while the kill is still under way (before
    // `killed_at` is set) was in flight when the primary died.
    let killing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut load = Vec::new();
    for (w, home) in homes.iter().enumerate() {
        let first = if w == 0 { &url_a } else { &url_b };
        let other = if w == 0 { &url_b } else { &url_a };
        let c = client(home, &[first, other], &fp);
        let (tl, kill_time, stop) = (tally.clone(), killed_at.clone(), stop_rx.clone());
        let killing = killing.clone();
        load.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !*stop.borrow() {
                let name = format!("w{w}/k{i}");
                let payload = format!("writer {w} put {i}").into_bytes();
                let dn = DepositName::parse(&name).unwrap();
                let started = Instant::now();
                let r = tokio::time::timeout(HANG, c.put(&dn, payload.clone(), Precondition::None))
                    .await;
                {
                    let mut t = tl.lock().unwrap();
                    match r {
                        Ok(Ok(_)) => {
                            t.acked.insert(name, payload);
                            let killed = *kill_time.lock().unwrap();
                            if let Some(k) = killed
                                && started > k
                                && t.first_write_after_kill.is_none()
                            {
                                t.first_write_after_kill = Some(Instant::now());
                            }
                            i += 1;
                        }
                        // Refused with when to retry (the server's Retry-After).
                        Ok(Err(e))
                            if e.code() == Some(ErrorCode::ReadOnly)
                                && e.to_string().contains("retry after 5 s") =>
                        {
                            t.read_only += 1
                        }
                        // A put in flight when the primary died may have been committed or not:
                        // `unavailable` (outcome unknown, never acknowledged) is the honest answer.
                        Ok(Err(e))
                            if e.code() == Some(ErrorCode::Unavailable)
                                && killing.load(std::sync::atomic::Ordering::SeqCst)
                                && kill_time.lock().unwrap().is_none_or(|k| started < k)
                                && t.first_write_after_kill.is_none() =>
                        {
                            t.in_flight_at_kill += 1
                        }
                        Ok(Err(e)) => t.other_errors.push(format!("put {name}: {e}")),
                        Err(_) => t
                            .other_errors
                            .push(format!("put {name}: no answer in {HANG:?}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
        // A reader through the same pair of nodes.
        let c = client(home, &[first, other], &fp);
        let (tl, stop, killed) = (tally.clone(), stop_rx.clone(), killed_at.clone());
        load.push(tokio::spawn(async move {
            while !*stop.borrow() {
                let pick = {
                    let t = tl.lock().unwrap();
                    t.acked
                        .iter()
                        .next_back()
                        .map(|(k, v)| (k.clone(), v.clone()))
                };
                if let Some((name, payload)) = pick
                    && name.starts_with(&format!("w{w}/"))
                {
                    let dn = DepositName::parse(&name).unwrap();
                    let r = tokio::time::timeout(HANG, c.get(&dn, None)).await;
                    let mut t = tl.lock().unwrap();
                    match r {
                        Ok(Ok(f)) if f.payload.as_ref() == payload.as_slice() => {
                            t.read_ok += 1;
                            if killed.lock().unwrap().is_some()
                                && t.first_write_after_kill.is_none()
                            {
                                t.read_ok_during_outage += 1;
                            }
                        }
                        Ok(Ok(_)) => t.read_errors.push(format!("get {name}: wrong bytes")),
                        Ok(Err(e)) => t.read_errors.push(format!("get {name}: {e}")),
                        Err(_) => t.read_errors.push(format!("get {name}: no answer")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    // Either node's status shows both nodes writing to the primary, and its synchronous
    // standby.
    let v = json(&ok(&run(admin(
        t,
        &dir_b,
        &["cluster", "status", "--json"],
    ))
    .await));
    let replicas = v["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1, "{v}");
    assert!(
        ["sync", "quorum"].contains(&replicas[0]["sync_state"].as_str().unwrap()),
        "{v}"
    );
    // The replication series the example alert rules use, from a real standby.
    let log_b = t.join(format!("serve-127.0.0.3-{pb}.log"));
    wait_for_one_standby_in_metrics(&log_b).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = tally.lock().unwrap().acked.len();
    assert!(before > 0, "no put was acknowledged before the failover");

    // 2. kill -9 the primary (keeper and postmaster) mid-load.
    let old_primary = formation.primary().unwrap();
    let new_primary = if old_primary == p1 { p2 } else { p1 };
    // The window counts from the start of the kill; a put counts as accepted after the kill
    // only if it was sent once the kill was done (the old primary gone), and a put sent
    // before that may answer `unavailable` (in flight while the primary died).
    let kill = Instant::now();
    killing.store(true, std::sync::atomic::Ordering::SeqCst);
    {
        let f = formation.clone();
        tokio::task::spawn_blocking(move || f.kill_node(old_primary))
            .await
            .unwrap();
    }
    *killed_at.lock().unwrap() = Some(Instant::now());
    // During the outage the gateway still decrypts (a key read through a standby) and answers
    // a key creation with a clear error that says to retry.
    {
        let eek = created.clone();
        let (decrypt, create) = tokio::task::spawn_blocking(move || {
            let body = serde_json::json!({
                "name": "fo",
                "iv": eek["iv"],
                "material": eek["encryptedKeyVersion"]["material"],
            })
            .to_string();
            let path = format!(
                "/kms/v1/keyversion/{}/_eek?eek_op=decrypt",
                eek["versionName"].as_str().unwrap()
            );
            let decrypt = gateway(gw_port, "POST", &path, &body);
            let create = gateway(
                gw_port,
                "POST",
                "/kms/v1/keys",
                r#"{"name":"fo2","cipher":"AES/CTR/NoPadding","length":128}"#,
            );
            (decrypt, create)
        })
        .await
        .unwrap();
        assert!(
            tally.lock().unwrap().first_write_after_kill.is_none(),
            "the outage was over before the gateway was asked"
        );
        assert_eq!(decrypt.0, 200, "decrypt during the outage: {}", decrypt.1);
        // Hadoop's wire contract has no 503: a backend failure is a 500 carrying an
        // IOException, which Hadoop's client raises as such (and its load-balancing provider
        // retries on another gateway); the message says what happened and to retry.
        assert_eq!(create.0, 500, "create during the outage: {}", create.1);
        let e: serde_json::Value = serde_json::from_str(&create.1).unwrap();
        assert_eq!(
            e["RemoteException"]["javaClassName"], "java.io.IOException",
            "{e}"
        );
        let message = e["RemoteException"]["message"].as_str().unwrap();
        assert!(
            message.contains("failing over") && message.contains("retry"),
            "{message}"
        );
    }
    // Writes come back by themselves once the monitor promoted the standby.
    loop {
        if tally.lock().unwrap().first_write_after_kill.is_some() {
            break;
        }
        assert!(
            kill.elapsed() < Duration::from_secs(150),
            "no write accepted {:?} after the primary was killed; monitor: {}",
            kill.elapsed(),
            formation.state()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = tally.lock().unwrap().first_write_after_kill.unwrap() - kill;
    eprintln!("write-unavailability window: {:.1} s", window.as_secs_f64());
    assert_eq!(formation.primary(), Some(new_primary));
    // More load on the new primary, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send(true).unwrap();
    for l in load {
        l.await.unwrap();
    }

    // 3. Every acknowledged write reads back exactly, through either node; during the outage
    //    writes were refused with read_only only, and reads kept succeeding.
    let tally = Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap();
    eprintln!(
        "acknowledged puts {}, read_only refusals {}, in flight at the kill {}, reads {} ({} during the outage)",
        tally.acked.len(),
        tally.read_only,
        tally.in_flight_at_kill,
        tally.read_ok,
        tally.read_ok_during_outage
    );
    let logs = || {
        let mut all = String::new();
        for (ip, port) in [("127.0.0.2", pa), ("127.0.0.3", pb)] {
            let log = std::fs::read_to_string(t.join(format!("serve-{ip}-{port}.log")))
                .unwrap_or_default();
            // What is not the expected refusal of a write while read-only.
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    (l.contains("ERROR") || l.contains("WARN"))
                        && !l.contains("storage is read-only")
                        && !l.contains("status=503")
                })
                .collect();
            all.push_str(&format!("--- {ip}:{port}\n"));
            for l in &lines[lines.len().saturating_sub(40)..] {
                all.push_str(l);
                all.push('\n');
            }
        }
        all
    };
    assert!(
        tally.other_errors.is_empty(),
        "{} errors other than read_only, first {:#?}\n{}",
        tally.other_errors.len(),
        &tally.other_errors[..tally.other_errors.len().min(3)],
        logs()
    );
    assert!(
        tally.read_errors.is_empty(),
        "{:#?}\n{}",
        tally.read_errors,
        logs()
    );
    assert!(
        tally.read_only > 0,
        "no write was refused as read_only during the failover"
    );
    assert!(
        tally.read_ok_during_outage > 0,
        "no read succeeded during the outage"
    );
    let only_a = client(&homes[0], &[&url_a], &fp);
    let only_b = client(&homes[0], &[&url_b], &fp);
    let only_a1 = client(&homes[1], &[&url_a], &fp);
    let only_b1 = client(&homes[1], &[&url_b], &fp);
    for (name, payload) in &tally.acked {
        let dn = DepositName::parse(name).unwrap();
        let (x, y) = if name.starts_with("w0/") {
            (&only_a, &only_b)
        } else {
            (&only_a1, &only_b1)
        };
        for c in [x, y] {
            let got = c
                .get(&dn, None)
                .await
                .unwrap_or_else(|e| panic!("acknowledged {name} lost: {e}"));
            assert_eq!(got.payload.as_ref(), payload.as_slice(), "{name}");
        }
    }

    // 4. kill -9 keysafe node A under load: a client with both nodes configured, getting
    //    back to back, sees no failed get.
    let both = client(&homes[0], &[&url_a, &url_b], &fp);
    let mine: Vec<(String, Vec<u8>)> = tally
        .acked
        .iter()
        .filter(|(n, _)| n.starts_with("w0/"))
        .map(|(n, p)| (n.clone(), p.clone()))
        .collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let getter = tokio::spawn(async move {
        let mut done = 0u32;
        for (name, payload) in mine.iter().cycle() {
            if *stop_rx.borrow() {
                break;
            }
            let dn = DepositName::parse(name).unwrap();
            let got = tokio::time::timeout(HANG, both.get(&dn, None))
                .await
                .map_err(|_| format!("get {name}: no answer"))?
                .map_err(|e| format!("get {name} while node A was killed: {e}"))?;
            if got.payload.as_ref() != payload.as_slice() {
                return Err(format!("get {name}: wrong bytes"));
            }
            done += 1;
        }
        Ok::<_, String>(done)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    srv_a.take().unwrap().kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send(true).unwrap();
    let gets = getter.await.unwrap().unwrap();
    assert!(gets > 0);
    // Node A restarts with no manual step and serves again.
    let (srv_a, _) = spawn_serve_at(t, &dir_a, "127.0.0.2", pa);
    wait_healthy(&url_a).await;

    // 5. A client disabled through node A is refused by node B within the bound.
    let fp1 = keysafe_client::ClientHome::read_identity(&homes[1])
        .unwrap()
        .fingerprint;
    ok(&run(admin(t, &dir_a, &["client", "disable", fp1.as_str()])).await);
    let start = Instant::now();
    loop {
        match only_b1.whoami().await {
            Err(e) if e.code() == Some(ErrorCode::ClientDisabled) => break,
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "node B still serves a client disabled through node A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "disable through A in effect on B after {:?}",
        start.elapsed()
    );

    // 6. Rotation through A, retirement of the old version; B serves and takes puts throughout.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = {
        let c = only_b.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !*stop_rx.borrow() {
                let name = DepositName::parse(&format!("rot/{i}")).unwrap();
                let payload = format!("rotation {i}").into_bytes();
                c.put(&name, payload.clone(), Precondition::None)
                    .await
                    .map_err(|e| format!("put {name} through node B: {e}"))?;
                acked.push((name, payload));
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, String>(acked)
        })
    };
    ok(&run(admin(t, &dir_a, &["keyring", "rotate", "--wait"])).await);
    ok(&run(admin(t, &dir_a, &["keyring", "retire", "1"])).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();
    let rotated = writer.await.unwrap().unwrap();
    assert!(!rotated.is_empty());
    for (name, payload) in &rotated {
        assert_eq!(
            only_b.get(name, None).await.unwrap().payload.as_ref(),
            payload.as_slice()
        );
    }
    for (name, payload) in tally.acked.iter().filter(|(n, _)| n.starts_with("w0/")) {
        let dn = DepositName::parse(name).unwrap();
        let got = only_b
            .get(&dn, None)
            .await
            .unwrap_or_else(|e| panic!("{name} after the retirement: {e}"));
        assert_eq!(got.payload.as_ref(), payload.as_slice());
    }

    // 7. The whole cluster's trail verifies, with entries from both nodes; no spool is left.
    let nodes = psql(
        new_primary,
        "keysafe",
        "SELECT string_agg(DISTINCT node, ',' ORDER BY node) FROM audit_log",
    );
    assert_eq!(nodes.as_deref(), Some("node-a,node-b"));
    let out = ok(&run(admin(t, &dir_b, &["audit", "verify"])).await);
    assert!(out.contains("Audit trail verified"), "{out}");

    // 8. The killed database server comes back as the new primary's synchronous standby and
    //    receives what is written now; the nodes report it again.
    {
        let f = formation.clone();
        tokio::task::spawn_blocking(move || {
            f.restart_node(old_primary);
            f.wait_for("the old primary to rejoin as a synchronous standby", || {
                f.is_sync_standby(old_primary, new_primary)
            });
        })
        .await
        .unwrap();
    }
    let name = DepositName::parse("after/rejoin").unwrap();
    only_b
        .put(
            &name,
            b"written after the rejoin".to_vec(),
            Precondition::None,
        )
        .await
        .unwrap();
    let count = "SELECT count(*) FROM audit_log";
    let on_primary: u64 = psql(new_primary, "keysafe", count)
        .unwrap()
        .parse()
        .unwrap();
    let start = Instant::now();
    loop {
        let on_standby: u64 = psql(old_primary, "keysafe", count)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if on_standby >= on_primary {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the rejoined standby has {on_standby} audit rows, the primary {on_primary}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_for_one_standby_in_metrics(&log_b).await;
    let v = json(&ok(&run(admin(
        t,
        &dir_a,
        &["cluster", "status", "--json"],
    ))
    .await));
    assert_eq!(v["replicas"].as_array().unwrap().len(), 1, "{v}");
    srv_a.kill();
    srv_b.kill();
    drop(formation);
}
