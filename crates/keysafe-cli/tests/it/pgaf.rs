//! A pg_auto_failover formation for the cluster tests: a monitor and two keepers (`pg_autoctl
//! run` as the `postgres` user, fast health checks so tests stay CI-length), a primary with a
//! synchronous standby; helpers to kill a node's processes by pid and to bring it back.

use crate::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
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
pub struct Formation {
    root: PathBuf,
    monitor_port: u16,
    pub ports: [u16; 2],
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
pub fn psql(port: u16, db: &str, sql: &str) -> Option<String> {
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
    pub fn start(root: &Path) -> Formation {
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

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.join(format!("{name}.log"))).unwrap_or_default()
    }

    pub fn run_keeper(&self, pgdata: &Path, name: &str) {
        let log = std::fs::File::create(self.root.join(format!("{name}.log"))).unwrap();
        let mut c = autoctl(&self.root, &["run", "--pgdata", pgdata.to_str().unwrap()]);
        c.stdout(log.try_clone().unwrap()).stderr(log);
        let child = c.spawn().unwrap();
        self.keepers.lock().unwrap().push(Some(child));
    }

    pub fn wait_for(&self, what: &str, mut check: impl FnMut() -> bool) {
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

    pub fn state(&self) -> String {
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
    pub fn primary(&self) -> Option<u16> {
        self.ports
            .into_iter()
            .find(|p| psql(*p, "postgres", "SELECT pg_is_in_recovery()").as_deref() == Some("f"))
    }

    /// kill -9 of the keeper of the node on `port` (the `pg_autoctl run` process and every
    /// process under it, the postmaster included).
    pub fn kill_node(&self, port: u16) {
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

    /// Starts the keeper of the node on `port` again after [`Formation::kill_node`]; the
    /// monitor makes it rejoin as a standby of the current primary (pg_rewind when needed).
    pub fn restart_node(&self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        let pgdata = self.root.join(format!("node{}", i + 1));
        self.run_keeper(&pgdata, &format!("node{}-restarted", i + 1));
    }

    /// Whether the node on `standby` is in recovery and the primary on `primary` reports it as
    /// its synchronous standby, streaming.
    pub fn is_sync_standby(&self, standby: u16, primary: u16) -> bool {
        psql(standby, "postgres", "SELECT pg_is_in_recovery()").as_deref() == Some("t")
            && psql(
                primary,
                "postgres",
                "SELECT count(*) FROM pg_stat_replication \
                 WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum')",
            )
            .as_deref()
                == Some("1")
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
