//! Seal migration under kill -9: a data directory of 10,000 deposits is migrated between HSM
//! keys and modes (the per-deposit layer moves every data key) by a real `keysafe` child that
//! is killed at many points: right after it staged the new configuration, after it wrote the
//! new keyring rows, at several fractions of the re-wrap, and right after the switch. After
//! each crash the server refuses to start on the half-migrated directory, and the same command
//! finishes the migration or `--rollback` undoes it (alternately); every deposit then reads.
//! The directory lock is tested on the way: no migration beside a running server or beside
//! another migration, and no server beside a migration.
//!
//! `KEYSAFE_MIGRATION_KILLS` sets the number of kill points (default 8).

use crate::hsm::{Server, SoftHsm, client, free_port, init, name, wait_status};
use crate::{fails_with, ok, run};
use keysafe_client::KeysafeClient;
use keysafe_client::client::Precondition;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const DEPOSITS: usize = 10_000;
const TOKEN: &str = "crash";

fn kill_points() -> usize {
    std::env::var("KEYSAFE_MIGRATION_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
        .max(4)
}

fn payload(i: usize) -> Vec<u8> {
    format!("deposit {i} payload").into_bytes()
}

fn key(i: usize) -> String {
    format!("d/{i}")
}

/// Where the migration is killed.
#[derive(Debug, Clone)]
enum Kill {
    /// Right after it prints a line containing this.
    AfterLine(&'static str),
    /// Once it reports at least this many data keys looked at.
    AfterRows(u64),
}

impl Kill {
    fn matches(&self, line: &str) -> bool {
        match self {
            Kill::AfterLine(s) => line.contains(s),
            Kill::AfterRows(n) => line
                .strip_prefix("Re-wrapped ")
                .and_then(|r| r.split_once(' '))
                .and_then(|(k, _)| k.parse::<u64>().ok())
                .is_some_and(|k| k >= *n),
        }
    }
}

/// The kill point of cycle `i` of `n`: the start, the new keyring rows, fractions of the
/// re-wrap, and the switch.
fn kill_point(i: usize, n: usize) -> Kill {
    match i {
        0 => Kill::AfterLine("Staged the new configuration"),
        1 => Kill::AfterLine("Wrote the keyring under the new seal"),
        _ if i == n - 1 => Kill::AfterLine("Switched keysafe.toml"),
        _ => Kill::AfterRows(((i - 1) * (DEPOSITS + 1) / (n - 2)) as u64),
    }
}

/// A seal the migrations move between: (mode, key label).
type Target = (&'static str, &'static str);
const TARGETS: [Target; 4] = [
    ("per-deposit", "k1"),
    ("keyring", "k1"),
    ("per-deposit", "k2"),
    ("keyring", "k2"),
];

struct Run {
    killed: bool,
    output: Output,
}

/// Runs `cmd`, kills it with SIGKILL at `kill`, and calls `meanwhile` once, while it runs,
/// when it has staged its configuration.
fn run_and_kill(mut cmd: Command, kill: Kill, meanwhile: impl FnOnce()) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let stderr = child.stderr.take().unwrap();
    let mut meanwhile = Some(meanwhile);
    let mut lines = Vec::new();
    let mut killed = false;
    for line in std::io::BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line.contains("Staged the new configuration")
            && let Some(f) = meanwhile.take()
        {
            f();
        }
        if !killed && kill.matches(&line) {
            killed = Command::new("kill")
                .args(["-9", &pid])
                .status()
                .unwrap()
                .success();
        }
        lines.push(line);
    }
    let mut output = child.wait_with_output().unwrap();
    output.stderr = lines.join("\n").into_bytes();
    // Killed means it died of the signal, not that it had finished before the signal landed.
    use std::os::unix::process::ExitStatusExt;
    let killed = killed && output.status.signal() == Some(9);
    Run { killed, output }
}

fn migrate_cmd(hsm: &SoftHsm, work: &Path, dir: &Path, target: Target) -> Command {
    let mut m = hsm.cmd(work);
    // Progress as lines on stderr: the kill points follow them.
    m.env("KEYSAFE_PROGRESS", "lines");
    m.args(["admin", "--data-dir"])
        .arg(dir)
        .args(["seal", "migrate", "--to", "pkcs11", "--pkcs11-token", TOKEN])
        .args(["--pkcs11-mode", target.0, "--pkcs11-key", target.1])
        .arg("--pkcs11-pin-file")
        .arg(&hsm.pin_file);
    m
}

fn rollback_cmd(hsm: &SoftHsm, work: &Path, dir: &Path) -> Command {
    let mut m = hsm.cmd(work);
    m.args(["admin", "--data-dir"])
        .arg(dir)
        .args(["seal", "migrate", "--rollback"]);
    m
}

/// What keysafe.toml names now: (type, mode, key).
fn configured(dir: &Path) -> (String, String, String) {
    let t: toml::Table = std::fs::read_to_string(dir.join("keysafe.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let seal = t["seal"].as_table().unwrap();
    let get = |k: &str| {
        seal.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    (get("type"), get("pkcs11_mode"), get("pkcs11_key"))
}

fn is(target: Target, now: &(String, String, String)) -> bool {
    now.0 == "pkcs11" && now.1 == target.0 && now.2 == target.1
}

async fn put_all(c: &KeysafeClient) {
    let mut tasks = Vec::new();
    for t in 0..16 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..DEPOSITS).step_by(16) {
                c.put(&name(&key(i)), payload(i), Precondition::None)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Reads every `stride`-th deposit (all with stride 1), concurrently.
async fn read_every(c: &KeysafeClient, stride: usize, offset: usize) {
    let mut tasks = Vec::new();
    for t in 0..16 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in (offset % stride..DEPOSITS)
                .step_by(stride)
                .skip(t)
                .step_by(16)
            {
                let got = c.get(&name(&key(i)), None).await;
                assert_eq!(
                    &got.unwrap_or_else(|e| panic!("{}: {e}", key(i))).payload[..],
                    &payload(i)[..],
                    "{}",
                    key(i)
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seal_migration_killed_at_any_point_finishes_or_rolls_back_with_every_deposit_readable() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let hsm = SoftHsm::new(w, TOKEN);
    let dir = w.join("data");
    let mut c = hsm.cmd(w);
    init(&mut c, &dir, free_port());
    ok(&run(c).await);
    let srv = Server::start(hsm.cmd(w), &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| hsm.cmd(w), &dir, w, &srv.1).await;
    put_all(&cl).await;

    // No migration beside a running server (a file lock, not a port probe: the server is
    // reachable or not, the lock is what counts).
    let err = fails_with(&run(migrate_cmd(&hsm, w, &dir, TARGETS[0])).await, 1);
    assert!(err.contains("in use by a running keysafe server"), "{err}");
    drop(srv);

    let n = kill_points();
    let mut current: Option<Target> = None; // None: the file seal `init` made.
    let mut killed_runs = 0;
    for cycle in 0..n {
        // The next target that differs from what is configured now.
        let target = (0..TARGETS.len())
            .map(|k| TARGETS[(cycle + k) % TARGETS.len()])
            .find(|t| Some(*t) != current)
            .unwrap();
        let kill = kill_point(cycle, n);
        let cmd = migrate_cmd(&hsm, w, &dir, target);
        let first = cycle == 0;
        let (h, d) = (&hsm, dir.clone());
        let checks = move || {
            if !first {
                return;
            }
            // While it runs: a second migration and a server are both refused.
            let o = migrate_cmd(h, w, &d, TARGETS[1]).output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success());
            assert!(err.contains("another keysafe command"), "{err}");
            let o = h
                .cmd(w)
                .args(["serve", "--data-dir"])
                .arg(&d)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success());
            assert!(err.contains("another keysafe command"), "{err}");
        };
        // Scoped so the borrow of `hsm` ends with the child.
        let outcome = std::thread::scope(|s| {
            s.spawn(|| run_and_kill(cmd, kill.clone(), checks))
                .join()
                .unwrap()
        });
        let staged = dir.join("keysafe.toml.migrating").exists();
        eprintln!(
            "cycle {cycle}: {target:?} killed={} at {kill:?}, staged left={staged}",
            outcome.killed
        );
        if !outcome.killed {
            ok(&outcome.output);
            current = Some(target);
        } else {
            killed_runs += 1;
            if staged {
                // A half-migrated directory: no server starts on it.
                let mut s = hsm.cmd(w);
                s.args(["serve", "--data-dir"]).arg(&dir);
                let err = fails_with(&run(s).await, 1);
                assert!(err.contains("seal migration"), "{err}");
            }
            let roll_back = staged && cycle % 2 == 1 && current.is_some();
            let began = std::time::Instant::now();
            let after = if roll_back {
                run(rollback_cmd(&hsm, w, &dir)).await
            } else {
                run(migrate_cmd(&hsm, w, &dir, target)).await
            };
            let err = String::from_utf8_lossy(&after.stderr).into_owned();
            // For the record (never asserted): how long the finishing run took.
            eprintln!(
                "cycle {cycle}: {} in {} ms: {}",
                if roll_back { "rolled back" } else { "finished" },
                began.elapsed().as_millis(),
                err.lines().last().unwrap_or_default()
            );
            assert!(!err.contains("open under neither"), "{err}");
            if staged || after.status.success() {
                ok(&after);
            } else {
                // Killed after the switch and after the old rows were deleted: done already.
                assert!(err.contains("already"), "{err}");
            }
            if !roll_back {
                current = Some(target);
            }
        }
        assert!(!dir.join("keysafe.toml.migrating").exists());
        let now = configured(&dir);
        match current {
            Some(t) => assert!(is(t, &now), "cycle {cycle}: {now:?}, expected {t:?}"),
            None => assert_eq!(now.0, "file"),
        }

        // The server starts on the result and reads a different sample of deposits each time.
        let srv = Server::start(hsm.cmd(w), &dir);
        let h = wait_status(&srv.1, "ok").await;
        let expected = if current.is_some() { "pkcs11" } else { "file" };
        assert_eq!(h.seal.as_deref(), Some(expected));
        read_every(&cl, 37, cycle).await;
        drop(srv);
    }
    assert!(
        killed_runs >= n / 2,
        "only {killed_runs} of {n} runs were killed mid-way"
    );

    // Every deposit, at the end.
    let srv = Server::start(hsm.cmd(w), &dir);
    wait_status(&srv.1, "ok").await;
    read_every(&cl, 1, 0).await;
    let mut st = hsm.cmd(w);
    st.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["keyring", "status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&ok(&run(st).await)).unwrap();
    assert_eq!(s["versions"][0]["data_keys"], DEPOSITS as u64, "{s}");
    drop(srv);
}
