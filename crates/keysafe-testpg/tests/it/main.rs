//! The harness itself: a cluster starts, serves a fresh database, runs a standby, and leaves
//! nothing behind (no directory, no server process) once dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keysafe_testpg::{ClusterOptions, TestCluster};

/// Whether a process runs (a zombie waiting for init to reap it does not).
fn alive(pid: u32) -> bool {
    keysafe_testpg::running(pid)
}

#[test]
fn cluster_serves_databases_replicates_and_cleans_up_after_itself() {
    let primary = TestCluster::start(ClusterOptions {
        settings: vec![("application_name".into(), "'harness-test'".into())],
        ..ClusterOptions::default()
    })
    .unwrap();
    let db = primary.create_database("").unwrap();
    assert_eq!(
        primary
            .psql(&db, "SELECT current_database(), current_setting('fsync')")
            .unwrap(),
        format!("{db}|off")
    );
    primary
        .psql(&db, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        .unwrap();
    let standby = primary.start_standby(ClusterOptions::default()).unwrap();
    assert_ne!(standby.port(), primary.port());
    // The standby replays the primary: it answers reads and refuses writes.
    let mut seen = String::new();
    for _ in 0..100 {
        seen = standby.psql(&db, "SELECT x FROM t").unwrap_or_default();
        if seen == "42" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(seen, "42");
    assert_eq!(
        standby.psql(&db, "SELECT pg_is_in_recovery()").unwrap(),
        "t"
    );
    assert!(standby.psql(&db, "INSERT INTO t VALUES (1)").is_err());
    standby.promote().unwrap();
    standby.psql(&db, "INSERT INTO t VALUES (1)").unwrap();

    let dirs = [
        primary.socket_dir().to_owned(),
        standby.socket_dir().to_owned(),
    ];
    let pids = [
        primary.postmaster_pid().unwrap(),
        standby.postmaster_pid().unwrap(),
    ];
    drop(standby);
    drop(primary);
    for d in &dirs {
        assert!(!d.exists(), "{} is left behind", d.display());
    }
    for pid in pids {
        assert!(!alive(pid), "postmaster {pid} is still running");
    }
}

#[test]
fn a_stopped_cluster_restarts_on_the_same_port() {
    let c = TestCluster::start(ClusterOptions::default()).unwrap();
    let port = c.port();
    let pid = c.postmaster_pid().unwrap();
    c.stop_immediate().unwrap();
    assert!(!alive(pid));
    c.restart().unwrap();
    assert_eq!(c.port(), port);
    assert_eq!(c.psql("postgres", "SELECT 1").unwrap(), "1");
}

/// With `KEYSAFE_TESTPG_PROBE` set (by the test below, which runs this binary again), reports
/// the shared cluster's directory and postmaster and then waits to be killed.
#[test]
fn shared_cluster_answers() {
    let c = keysafe_testpg::shared().unwrap();
    assert_eq!(c.psql("postgres", "SELECT 1").unwrap(), "1");
    // Room for every test of a binary at once, each with a store's pool.
    assert_eq!(c.psql("postgres", "SHOW max_connections").unwrap(), "400");
    if std::env::var_os("KEYSAFE_TESTPG_PROBE").is_some() {
        println!(
            "probe {} {}",
            c.postmaster_pid().unwrap(),
            c.socket_dir().display()
        );
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
}

/// The shared cluster is never dropped: its watchdog must stop it and remove its directory
/// when the test process dies, even by `kill -9`.
#[test]
fn the_shared_cluster_does_not_outlive_a_killed_test_process() {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shared_cluster_answers",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KEYSAFE_TESTPG_PROBE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map(Result::unwrap)
        .find_map(|l| l.split_once("probe ").map(|(_, rest)| rest.to_owned()))
        .expect("the probe reports its cluster");
    let mut parts = line.split(' ');
    let pid: u32 = parts.next().unwrap().parse().unwrap();
    let dir = std::path::PathBuf::from(parts.next().unwrap());
    assert!(alive(pid) && dir.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    let mut gone = false;
    for _ in 0..200 {
        if !alive(pid) && !dir.exists() {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        gone,
        "postmaster {pid} or {} outlived the test process",
        dir.display()
    );
}

/// Without the server binaries a test fails (never skips) and says what to install.
#[test]
fn missing_binaries_fail_the_test_with_what_to_install() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "shared_cluster_answers", "--nocapture"])
        .env("KEYSAFE_PG_BINDIR", "/nonexistent/postgresql/bin")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("install postgresql-15"), "{text}");
    assert!(text.contains("1 failed"), "{text}");
}
