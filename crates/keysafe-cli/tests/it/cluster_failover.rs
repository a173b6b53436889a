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
//! 4. kill -9 of keysafe node A: a client configured with both nodes sees no failed get; node A
//!    restarts and rejoins with no manual step;
//! 5. a client disabled through node A is refused by node B within the documented bound;
//! 6. a keyring rotation through node A and the retirement of the old version: node B serves
//!    every deposit and accepts puts throughout;
//! 7. `audit verify` over the trail both nodes wrote (including what was spooled while the
//!    database was read-only).
//!
//! It prints the write-unavailability window (kill to first accepted write).

use crate::{free_port, keysafe, ok, run, spawn_serve_at, wait_healthy};
use keysafe_client::client::{ClientOptions, FailoverOptions, ServerSpec};
use keysafe_client::{KeysafeClient, Precondition, ServerTrust};
use keysafe_proto::{ClientFingerprint, DepositName, ErrorCode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// A request that takes longer than this during the failover counts as a hang.
const HANG: Duration = Duration::from_secs(20);
/// The monitor's health-check settings (docs/operations.md, "Tuning the failover window").
const MONITOR_SETTINGS: &[(&str, &str)] = &[
    ("pgautofailover.health_check_period", "1000"),
    ("pgautofailover.health_check_timeout", "1000"),
    ("pgautofailover.health_check_max_retries", "1"),
    ("pgautofailover.health_check_retry_delay", "500"),
    ("pgautofailover.node_considered_unhealthy_timeout", "2000"),
    ("pgautofailover.primary_demote_timeout", "'10s'"),
];
/// The keepers' network partition timeout (seconds): below the monitor's demote timeout, so an
/// isolated old primary fences itself before the standby is promoted.
const NETWORK_PARTITION_TIMEOUT: &str = "5";

/// The pg_auto_failover formation of this test: a monitor and two keepers, each a `pg_autoctl
/// run` child running as `postgres`. Dropping it kills every process it started (by pid).
struct Formation {
    root: PathBuf,
    monitor_port: u16,
    ports: [u16; 2],
    keepers: Mutex<Vec<Option<Child>>>,
}

fn autoctl(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", "env"])
        .arg(format!("XDG_CONFIG_HOME={}", root.join("config").display()))
        .arg(format!("XDG_DATA_HOME={}", root.join("data").display()))
        .arg(format!("XDG_RUNTIME_DIR={}", root.join("run").display()))
        .arg(format!("PATH={PG_BIN}:/usr/bin:/bin"))
        .arg("pg_autoctl")
        .args(args)
        .stdin(Stdio::null());
    c
}

fn checked(mut c: Command, what: &str) -> String {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); is pg-auto-failover-cli installed?"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `psql` as the superuser over TCP; `None` when the server does not answer.
fn psql(port: u16, db: &str, sql: &str) -> Option<String> {
    let out = Command::new(format!("{PG_BIN}/psql"))
        .args(["-X", "-q", "-At", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &port.to_string(), "-d", db, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "2")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Every process whose parent chain leads to `pid` (read from /proc).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(pp) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parents.push((p, pp));
            }
        }
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parents {
            if *pp == p && !out.contains(c) {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

fn kill9(pids: &[u32]) {
    for p in pids {
        let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
    }
}

impl Formation {
    fn start(root: &Path) -> Formation {
        for d in ["config", "data", "run"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        assert!(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(root)
                .status()
                .unwrap()
                .success()
        );
        let f = Formation {
            root: root.to_owned(),
            monitor_port: free_port("127.0.0.1"),
            ports: [free_port("127.0.0.1"), free_port("127.0.0.1")],
            keepers: Mutex::new(Vec::new()),
        };
        let pgctl = format!("{PG_BIN}/pg_ctl");
        let monitor = root.join("monitor");
        checked(
            autoctl(
                root,
                &[
                    "create",
                    "monitor",
                    "--pgdata",
                    monitor.to_str().unwrap(),
                    "--pgport",
                    &f.monitor_port.to_string(),
                    "--hostname",
                    "127.0.0.1",
                    "--auth",
                    "trust",
                    "--no-ssl",
                    "--pgctl",
                    &pgctl,
                ],
            ),
            "pg_autoctl create monitor",
        );
        f.run_keeper(&monitor, "monitor");
        let mut up = false;
        for _ in 0..100 {
            if psql(f.monitor_port, "pg_auto_failover", "SELECT 1").is_some() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(up, "the monitor never answered: {}", f.log("monitor"));
        for (k, v) in MONITOR_SETTINGS {
            psql(
                f.monitor_port,
                "pg_auto_failover",
                &format!("ALTER SYSTEM SET {k} = {v}"),
            )
            .unwrap_or_else(|| panic!("cannot set {k} on the monitor"));
        }
        psql(
            f.monitor_port,
            "pg_auto_failover",
            "SELECT pg_reload_conf()",
        )
        .unwrap();
        let monitor_uri = format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable",
            f.monitor_port
        );
        for i in 0..2 {
            let pgdata = root.join(format!("node{}", i + 1));
            checked(
                autoctl(
                    root,
                    &[
                        "create",
                        "postgres",
                        "--pgdata",
                        pgdata.to_str().unwrap(),
                        "--pgport",
                        &f.ports[i].to_string(),
                        "--hostname",
                        "127.0.0.1",
                        "--auth",
                        "trust",
                        "--no-ssl",
                        "--monitor",
                        &monitor_uri,
                        "--pgctl",
                        &pgctl,
                        "--dbname",
                        "keysafe",
                    ],
                ),
                "pg_autoctl create postgres",
            );
            checked(
                autoctl(
                    root,
                    &[
                        "config",
                        "set",
                        "--pgdata",
                        pgdata.to_str().unwrap(),
                        "timeout.network_partition_timeout",
                        NETWORK_PARTITION_TIMEOUT,
                    ],
                ),
                "pg_autoctl config set",
            );
            f.run_keeper(&pgdata, &format!("node{}", i + 1));
            // keysafe connects over TCP as the superuser (trust, this test only).
            f.wait_for(&format!("node{} to accept connections", i + 1), || {
                psql(f.ports[i], "keysafe", "SELECT 1").is_some()
            });
            if i == 0 {
                f.wait_for("node1 to be primary", || f.primary() == Some(f.ports[0]));
            }
        }
        f.wait_for("a synchronous standby", || {
            psql(
                f.ports[0],
                "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
            )
            .as_deref()
                == Some("1")
        });
        assert_eq!(
            psql(f.ports[0], "postgres", "SHOW synchronous_commit").as_deref(),
            Some("on")
        );
        assert_ne!(
            psql(f.ports[0], "postgres", "SHOW synchronous_standby_names").as_deref(),
            Some("")
        );
        f
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn run_keeper(&self, pgdata: &Path, name: &str) {
        let log = std::fs::File::create(self.root.join(format!("{name}.log"))).unwrap();
        let mut c = autoctl(&self.root, &["run", "--pgdata", pgdata.to_str().unwrap()]);
        c.stdout(log.try_clone().unwrap()).stderr(log);
        let child = c.spawn().unwrap();
        self.keepers.lock().unwrap().push(Some(child));
    }

    fn wait_for(&self, what: &str, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "timed out waiting for {what}; monitor: {}",
                self.state()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn state(&self) -> String {
        let out = autoctl(
            &self.root,
            &[
                "show",
                "state",
                "--pgdata",
                self.root.join("monitor").to_str().unwrap(),
            ],
        )
        .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The port of the node that is a primary now (not in recovery), if any.
    fn primary(&self) -> Option<u16> {
        self.ports
            .into_iter()
            .find(|p| psql(*p, "postgres", "SELECT pg_is_in_recovery()").as_deref() == Some("f"))
    }

    /// kill -9 of the keeper of the node on `port` (the `pg_autoctl run` process and every
    /// process under it, the postmaster included).
    fn kill_node(&self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        // Keepers: [monitor, node1, node2].
        let mut keepers = self.keepers.lock().unwrap();
        let child = keepers[i + 1].as_mut().unwrap();
        let mut pids = descendants(child.id());
        pids.push(child.id());
        // The postmaster too, wherever it was started from.
        let pidfile = self.root.join(format!("node{}/postmaster.pid", i + 1));
        if let Some(pm) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        {
            pids.push(pm);
            pids.extend(descendants(pm));
        }
        kill9(&pids);
        let _ = child.wait();
        keepers[i + 1] = None;
    }
}

impl Drop for Formation {
    fn drop(&mut self) {
        let mut keepers = self.keepers.lock().unwrap_or_else(|p| p.into_inner());
        for k in keepers.iter_mut().rev().flatten() {
            let mut pids = descendants(k.id());
            pids.push(k.id());
            kill9(&pids);
            let _ = k.wait();
        }
        // Postmasters the keepers started and that outlived them.
        for name in ["node1", "node2", "monitor"] {
            if let Some(pm) =
                std::fs::read_to_string(self.root.join(format!("{name}/postmaster.pid")))
                    .ok()
                    .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
            {
                let mut pids = descendants(pm);
                pids.push(pm);
                kill9(&pids);
            }
        }
    }
}

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

    // 1. Concurrent puts through both nodes (each writer's own client, first server its node),
    //    and readers of what was acknowledged, until told to stop.
    let tally = Arc::new(Mutex::new(Tally::default()));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut load = Vec::new();
    for (w, home) in homes.iter().enumerate() {
        let first = if w == 0 { &url_a } else { &url_b };
        let other = if w == 0 { &url_b } else { &url_a };
        let c = client(home, &[first, other], &fp);
        let (tl, kill_time, stop) = (tally.clone(), killed_at.clone(), stop_rx.clone());
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
                                && kill_time.lock().unwrap().is_some_and(|k| started < k)
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
    {
        let f = formation.clone();
        tokio::task::spawn_blocking(move || f.kill_node(old_primary))
            .await
            .unwrap();
    }
    *killed_at.lock().unwrap() = Some(Instant::now());
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
    srv_a.kill();
    srv_b.kill();
    drop(formation);
}
