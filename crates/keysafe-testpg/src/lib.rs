//! Throwaway PostgreSQL clusters for tests: `initdb` in a temporary directory, a free port on
//! 127.0.0.1, the unix socket in the same directory, `pg_ctl -m immediate stop` when the cluster
//! is dropped or the test process ends (however it ends: a watchdog process notices that the
//! test process is gone and stops the server). It runs the server binaries as the `postgres`
//! user when the tests run as root (initdb refuses root). It never skips: when the binaries are
//! missing, [`TestCluster::start`] returns an error that says what to install.
//!
//! One cluster per test binary ([`shared`]) and a fresh database per test
//! ([`TestCluster::create_database`]) keeps suites fast (initdb takes 1–2 s, a database 20 ms).
//! Replication tests start a primary with [`TestCluster::start`], then a standby with
//! [`TestCluster::start_standby`] (`pg_basebackup -R`), and promote it with
//! [`TestCluster::promote`].
//!
//! Names no keysafe crate, so any crate's tests can use it.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// What went wrong starting or driving a cluster; the message says what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HarnessError(String);

type Result<T> = std::result::Result<T, HarnessError>;

fn err(msg: impl Into<String>) -> HarnessError {
    HarnessError(msg.into())
}

/// How to start a cluster. The defaults suit storage tests: fast (`fsync=off`), trust
/// authentication on 127.0.0.1 and the unix socket.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `postgresql.conf` settings, appended after the harness's own (the last one wins), e.g.
    /// `("ssl", "on")` or `("synchronous_standby_names", "'*'")`. Values are written verbatim:
    /// quote strings yourself.
    pub settings: Vec<(String, String)>,
    /// `pg_hba.conf` lines put before the default ones (the first matching line wins), e.g.
    /// `hostssl all keysafe 127.0.0.1/32 scram-sha-256`.
    pub hba: Vec<String>,
    /// Files written into the data directory before the server starts, owned by the server's
    /// user with mode 0600 (TLS certificate and key, referred to by relative name).
    pub files: Vec<(String, Vec<u8>)>,
    /// Keep `fsync=on`. Off by default: only tests of durability itself need it.
    pub durable: bool,
}

/// A running PostgreSQL cluster in a temporary directory, removed (with the server stopped) when
/// this value is dropped or the process exits.
#[derive(Debug)]
pub struct TestCluster {
    root: PathBuf,
    data: PathBuf,
    /// Set when the server starts (a restart may need a new one).
    port: AtomicU16,
    bin: PathBuf,
    as_postgres: bool,
    /// The watchdog reads its stdin until end of file, then stops the server and removes
    /// `root`. Closing our end (drop, or the kernel at process exit, even after `kill -9`) is
    /// the signal.
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

static SHARED: OnceLock<std::result::Result<TestCluster, HarnessError>> = OnceLock::new();

/// Connections the shared cluster accepts: every test of a binary may run at once (one per
/// core), each with a store's pool (up to 16) and a raw connection or two; initdb's default
/// (100, or less on a small machine) runs out on a many-core machine.
const SHARED_MAX_CONNECTIONS: u32 = 400;

/// The cluster shared by every test of this test binary, started on first use. It is never
/// dropped; its watchdog stops it when the test process exits.
pub fn shared() -> Result<&'static TestCluster> {
    SHARED
        .get_or_init(|| {
            TestCluster::start(ClusterOptions {
                settings: vec![("max_connections".into(), SHARED_MAX_CONNECTIONS.to_string())],
                ..ClusterOptions::default()
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The directory holding `initdb`, `pg_ctl`, `postgres`, `psql` and `pg_basebackup`:
/// `KEYSAFE_PG_BINDIR` if set, else the newest `/usr/lib/postgresql/<major>/bin` (Debian's
/// layout).
pub fn bindir() -> Result<PathBuf> {
    let complete = |d: &Path| {
        ["initdb", "pg_ctl", "postgres", "psql", "pg_basebackup"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("KEYSAFE_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(err(format!(
                "KEYSAFE_PG_BINDIR={} lacks the PostgreSQL server binaries \
                 (initdb, pg_ctl, postgres, psql, pg_basebackup): install postgresql-15 \
                 (apt-get install -y postgresql-15) or point it at their directory",
                dir.display()
            )))
        };
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            complete(&bin).then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| {
        err(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: \
             install postgresql-15 (apt-get install -y postgresql-15), or point \
             KEYSAFE_PG_BINDIR at a directory holding initdb and pg_ctl",
        )
    })
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| err(format!("no free port on 127.0.0.1: {e}")))
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

impl TestCluster {
    /// `initdb` and start a new cluster.
    pub fn start(opts: ClusterOptions) -> Result<TestCluster> {
        let cluster = Self::prepare(bindir()?)?;
        cluster.run_checked(
            "initdb",
            &[
                "-D",
                path_str(&cluster.data)?,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "-N",
            ],
        )?;
        cluster.configure(&opts)?;
        cluster.start_server(true)?;
        Ok(cluster)
    }

    /// A streaming-replication standby of this cluster (`pg_basebackup -R`), started and
    /// accepting read-only connections. For a synchronous standby, start this cluster with
    /// `synchronous_standby_names` set.
    pub fn start_standby(&self, opts: ClusterOptions) -> Result<TestCluster> {
        let standby = Self::prepare(self.bin.clone())?;
        standby.run_checked(
            "pg_basebackup",
            &[
                "-h",
                path_str(&self.root)?,
                "-p",
                &self.port().to_string(),
                "-U",
                "postgres",
                "-D",
                path_str(&standby.data)?,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-N",
            ],
        )?;
        standby.configure(&opts)?;
        standby.start_server(true)?;
        Ok(standby)
    }

    /// A temporary directory owned by the server's user, with a watchdog that removes it (and
    /// stops a server running in it) when this process lets go of it.
    fn prepare(bin: PathBuf) -> Result<TestCluster> {
        let root = tempfile::Builder::new()
            .prefix("keysafe-pg-")
            .tempdir()
            .map_err(|e| err(format!("cannot create a temporary directory: {e}")))?
            .keep();
        let as_postgres = running_as_root();
        if as_postgres {
            let out = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&root)
                .output()
                .map_err(|e| err(format!("chown: {e}")))?;
            if !out.status.success() {
                return Err(err(format!(
                    "cannot give {} to the postgres user (does it exist? install \
                     postgresql-15): {}",
                    root.display(),
                    output_text(&out)
                )));
            }
        }
        let data = root.join("data");
        let mut cluster = TestCluster {
            root,
            data,
            port: AtomicU16::new(0),
            bin,
            as_postgres,
            watchdog: Mutex::new(None),
        };
        cluster.watchdog = Mutex::new(Some(cluster.spawn_watchdog()?));
        Ok(cluster)
    }

    fn spawn_watchdog(&self) -> Result<(Child, ChildStdin)> {
        let stop = if self.as_postgres {
            "runuser -u postgres -- \"$0\" -D \"$1\" -m immediate stop >/dev/null 2>&1"
        } else {
            "\"$0\" -D \"$1\" -m immediate stop >/dev/null 2>&1"
        };
        let script = format!("read _ignored; {stop}; rm -rf \"$2\"");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(self.bin.join("pg_ctl"))
            .arg(&self.data)
            .arg(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C aimed at the test run must not kill the cleanup.
            .process_group(0)
            .spawn()
            .map_err(|e| err(format!("cannot start the cleanup watchdog (sh): {e}")))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| err("the watchdog has no stdin"))?;
        Ok((child, stdin))
    }

    fn configure(&self, opts: &ClusterOptions) -> Result<()> {
        let mut conf = format!(
            "\n# keysafe-testpg\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nfsync = {}\n",
            self.root.display(),
            if opts.durable { "on" } else { "off" }
        );
        for (k, v) in &opts.settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        let conf_path = self.data.join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| err(format!("cannot write {}: {e}", conf_path.display())))?;
        if !opts.hba.is_empty() {
            let hba_path = self.data.join("pg_hba.conf");
            let old = std::fs::read_to_string(&hba_path)
                .map_err(|e| err(format!("cannot read {}: {e}", hba_path.display())))?;
            let new = format!("{}\n{old}", opts.hba.join("\n"));
            std::fs::write(&hba_path, new)
                .map_err(|e| err(format!("cannot write {}: {e}", hba_path.display())))?;
        }
        for (name, bytes) in &opts.files {
            let path = self.data.join(name);
            std::fs::write(&path, bytes)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                })
                .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
            if self.as_postgres {
                self.chown(&path)?;
            }
        }
        Ok(())
    }

    fn chown(&self, path: &Path) -> Result<()> {
        let out = Command::new("chown")
            .arg("postgres:postgres")
            .arg(path)
            .output()
            .map_err(|e| err(format!("chown: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(err(format!(
                "chown {}: {}",
                path.display(),
                output_text(&out)
            )))
        }
    }

    /// Starts the server on a free port (a new one when `new_port`), retrying when another
    /// process took the port between choosing and binding it.
    fn start_server(&self, new_port: bool) -> Result<()> {
        let mut last = String::new();
        for _ in 0..5 {
            let port = match self.port() {
                0 => free_port()?,
                _ if new_port => free_port()?,
                p => p,
            };
            let log = self.root.join("pg.log");
            let out = self.run(
                "pg_ctl",
                &[
                    "-D",
                    path_str(&self.data)?,
                    "-l",
                    path_str(&log)?,
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &format!("-p {port}"),
                    "start",
                ],
            )?;
            if out.status.success() {
                self.port.store(port, Ordering::Relaxed);
                return Ok(());
            }
            last = format!("{}\n{}", output_text(&out), self.log_tail());
            if !last.contains("already in use") || !new_port {
                break;
            }
        }
        Err(err(format!("PostgreSQL did not start: {last}")))
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.root.join("pg.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("cannot run {}: {e}", exe.display())))
    }

    fn run_checked(&self, program: &str, args: &[&str]) -> Result<Output> {
        let out = self.run(program, args)?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(err(format!("{program} failed: {}", output_text(&out))))
        }
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// The directory holding the unix socket (and the data directory, `data/`).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB` (the superuser; trust authentication).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port())
    }

    /// Creates a database with a fresh name and returns the name. `options` is appended to
    /// `CREATE DATABASE name` (e.g. `TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'
    /// LOCALE 'C'`).
    pub fn create_database(&self, options: &str) -> Result<String> {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name} {options}"))?;
        Ok(name)
    }

    /// Runs SQL as the superuser over the unix socket and returns psql's unaligned,
    /// tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
            ])
            .arg("-h")
            .arg(&self.root)
            .arg("-p")
            .arg(self.port().to_string())
            .arg("-d")
            .arg(db)
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("cannot run psql: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
        } else {
            Err(err(format!("psql {sql:?}: {}", output_text(&out))))
        }
    }

    /// The postmaster's process id (first line of `postmaster.pid`), if the server runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// `pg_ctl promote`: a standby becomes a primary.
    pub fn promote(&self) -> Result<()> {
        self.run_checked("pg_ctl", &["-D", path_str(&self.data)?, "-w", "promote"])
            .map(|_| ())
    }

    /// Stops the server at once, as a crash would (`pg_ctl -m immediate stop`).
    pub fn stop_immediate(&self) -> Result<()> {
        let pid = self.postmaster_pid();
        self.run_checked(
            "pg_ctl",
            &["-D", path_str(&self.data)?, "-m", "immediate", "stop"],
        )?;
        // pg_ctl returns once the pid file is gone, which the postmaster removes just before it
        // exits: wait for the process itself, so "stopped" means no process is left.
        if let Some(pid) = pid {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while running(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Starts a stopped server again on the same port.
    pub fn restart(&self) -> Result<()> {
        if self.postmaster_pid().is_some() {
            let _ = self.stop_immediate();
        }
        self.start_server(false)
    }
}

/// Whether a process exists and is not a zombie.
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| err(format!("path is not UTF-8: {}", p.display())))
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.postmaster_pid().is_some() {
            let _ = self.stop_immediate();
        }
        let taken = self.watchdog.get_mut().ok().and_then(Option::take);
        if let Some((mut child, stdin)) = taken {
            // End of file on its stdin: the watchdog removes the directory and exits.
            drop(stdin);
            let _ = child.wait();
        }
    }
}
