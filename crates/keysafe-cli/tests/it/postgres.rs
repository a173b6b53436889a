//! keysafe on PostgreSQL the way a new user runs it, through the built binary: a PostgreSQL
//! server of their own (a throwaway cluster with `fsync=on`, password authentication for the
//! `keysafe` role, a `keysafe` database it owns), `keysafe init --storage postgres://...
//! --storage-password-file F`, `keysafe serve`, then register, put and get with the client
//! commands. Also a multi-host URL with `target_session_attrs=read-write` whose first host is
//! down, with the password from `KEYSAFE_STORAGE_PASSWORD`.

use crate::{fails_with, free_port, keysafe, ok, run, run_with_stdin, spawn_serve_at};
use keysafe_testpg::{ClusterOptions, TestCluster};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const PASSWORD: &str = "pg-PASSWORD-4b1d7e0a";

/// The cluster these tests share: password authentication (SCRAM) for `keysafe` over TCP,
/// durable as docs/postgresql.md asks.
fn cluster() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let c = TestCluster::start(ClusterOptions {
            settings: vec![("password_encryption".into(), "'scram-sha-256'".into())],
            hba: vec!["host all keysafe 127.0.0.1/32 scram-sha-256".into()],
            files: vec![],
            durable: true,
        })
        .unwrap_or_else(|e| panic!("these tests need a PostgreSQL server: {e}"));
        c.psql(
            "postgres",
            &format!("CREATE ROLE keysafe LOGIN PASSWORD '{PASSWORD}'"),
        )
        .unwrap();
        c
    })
}

/// A database owned by `keysafe`, as its administrator would create it.
fn database(name: &str) -> &'static TestCluster {
    let c = cluster();
    c.psql("postgres", &format!("CREATE DATABASE {name} OWNER keysafe"))
        .unwrap();
    c
}

fn private_file(path: &Path, contents: &str) {
    use std::io::Write;
    let mut f = keysafe_core::seal::open_options_private()
        .open(path)
        .unwrap();
    f.write_all(contents.as_bytes()).unwrap();
}

fn init(tmp: &Path, dir: &Path, port: u16, url: &str) -> Command {
    let mut c = keysafe(tmp);
    c.args(["init", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--storage", url]);
    c
}

fn admin(tmp: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = keysafe(tmp);
    c.args(["admin", "--data-dir"]).arg(dir).args(args);
    c
}

/// Adds an organisation, registers a client home into it and round-trips a deposit, all
/// through the binary. Returns the home.
async fn register_put_get(tmp: &Path, dir: &Path, url: &str, payload: &[u8]) -> PathBuf {
    let out = ok(&run(admin(tmp, dir, &["org", "add", "acme", "--json"])).await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let secret = tmp.join("acme.secret");
    private_file(&secret, v["auth_secret"].as_str().unwrap());
    let home = tmp.join("home");
    let mut r = keysafe(tmp);
    r.args(["register", "--server", url, "--org", "acme", "--auth-file"])
        .arg(&secret)
        .arg("--home")
        .arg(&home)
        .args(["--name", "web-1"]);
    ok(&run(r).await);
    let client = |args: &[&str]| {
        let mut c = keysafe(tmp);
        c.args(args).env("KEYSAFE_HOME", &home);
        c
    };
    ok(&run_with_stdin(client(&["put", "db/key"]), payload.to_vec()).await);
    let got = run(client(&["get", "db/key"])).await;
    ok(&got);
    assert_eq!(got.stdout, payload);
    home
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_user_runs_keysafe_on_postgresql_with_the_binary() {
    let c = database("keysafe");
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let url = format!("postgres://keysafe@127.0.0.1:{}/keysafe", c.port());
    let pw = tmp.join("storage.password");
    private_file(&pw, &format!("{PASSWORD}\n"));

    let dir = tmp.join("data");
    let port = free_port("127.0.0.1");
    let mut i = init(tmp, &dir, port, &url);
    i.arg("--storage-password-file").arg(&pw).arg("--json");
    let out = ok(&run(i).await);
    assert!(!out.contains(PASSWORD), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["database"], url.as_str());
    let toml = std::fs::read_to_string(dir.join("keysafe.toml")).unwrap();
    assert!(toml.contains(&format!("url = {url:?}")), "{toml}");
    assert!(
        toml.contains(&format!("password_file = {:?}", pw.display().to_string())),
        "{toml}"
    );
    assert!(!toml.contains(PASSWORD));
    // init made keysafe's schema in the database, and no database file.
    let migrations = std::fs::read_dir(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../keysafe-store/migrations/postgres"),
    )
    .unwrap()
    .count();
    assert_eq!(
        c.psql("keysafe", "SELECT count(*) FROM keysafe_migrations")
            .unwrap(),
        migrations.to_string(),
        "every migration applied once"
    );
    assert!(!dir.join("keysafe.db").exists());

    let (srv, server_url) = spawn_serve_at(tmp, &dir, "127.0.0.1", port);
    crate::wait_healthy(&server_url).await;
    let payload = b"a key kept in PostgreSQL".to_vec();
    register_put_get(tmp, &dir, &server_url, &payload).await;
    // The deposit is in PostgreSQL, sealed.
    assert_eq!(
        c.psql(
            "keysafe",
            "SELECT count(*) FROM deposit_versions WHERE name = 'db/key'"
        )
        .unwrap(),
        "1"
    );
    // The audit trail on PostgreSQL verifies from outside.
    let out = ok(&run(admin(tmp, &dir, &["audit", "verify"])).await);
    assert!(out.contains("Audit trail verified"), "{out}");
    srv.kill();
    let log = std::fs::read_to_string(tmp.join(format!("serve-127.0.0.1-{port}.log"))).unwrap();
    assert!(!log.contains(PASSWORD), "the password reached the log");

    // A second data directory cannot take the same database: init says so and leaves nothing.
    let again = tmp.join("again");
    let mut i = init(tmp, &again, free_port("127.0.0.1"), &url);
    i.arg("--storage-password-file").arg(&pw);
    let err = fails_with(&run(i).await, 1);
    assert!(err.contains("already exists"), "{err}");
    assert!(!again.exists());
    // A wrong password: a clear error that does not repeat it, and nothing left behind.
    let wrong = tmp.join("wrong.password");
    private_file(&wrong, "not-the-PASSWORD-1c9f\n");
    let fresh = tmp.join("fresh");
    c.psql("postgres", "CREATE DATABASE keysafe_fresh OWNER keysafe")
        .unwrap();
    let fresh_url = format!("postgres://keysafe@127.0.0.1:{}/keysafe_fresh", c.port());
    let mut i = init(tmp, &fresh, free_port("127.0.0.1"), &fresh_url);
    i.arg("--storage-password-file").arg(&wrong);
    let err = fails_with(&run(i).await, 1);
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("not-the-PASSWORD"), "{err}");
    assert!(!fresh.exists());
    // A password file others can read is refused before anything is written.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut i = init(tmp, &fresh, free_port("127.0.0.1"), &fresh_url);
    i.arg("--storage-password-file").arg(&pw);
    let err = fails_with(&run(i).await, 1);
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!fresh.exists());
    assert_eq!(
        c.psql(
            "keysafe_fresh",
            "SELECT to_regclass('keysafe_migrations') IS NULL"
        )
        .unwrap(),
        "t",
        "a refused init touched the database"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_host_url_finds_the_writable_host_for_init_and_serve() {
    let c = database("keysafe_multi");
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    // The first host is down (nothing listens there); libpq's rules say: try the next.
    let dead = free_port("127.0.0.1");
    let url = format!(
        "postgres://keysafe@127.0.0.1:{dead},127.0.0.1:{}/keysafe_multi?target_session_attrs=read-write&connect_timeout=5",
        c.port()
    );
    let dir = tmp.join("data");
    let port = free_port("127.0.0.1");
    // The password from the environment this time (no password file in the configuration).
    let mut i = init(tmp, &dir, port, &url);
    i.env("KEYSAFE_STORAGE_PASSWORD", PASSWORD);
    ok(&run(i).await);
    let toml = std::fs::read_to_string(dir.join("keysafe.toml")).unwrap();
    assert!(toml.contains("# password_file"), "{toml}");
    assert!(!toml.contains(PASSWORD));
    // Without the password, serve stops with a clear error.
    let mut s = keysafe(tmp);
    s.args(["serve", "--data-dir"]).arg(&dir);
    let err = fails_with(&run(s).await, 1);
    assert!(err.contains("cannot open the storage"), "{err}");

    let mut s = keysafe(tmp);
    s.args(["serve", "--data-dir"])
        .arg(&dir)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("KEYSAFE_STORAGE_PASSWORD", PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let srv = crate::Serve(Some(s.spawn().unwrap()));
    let server_url = format!("https://127.0.0.1:{port}");
    crate::wait_healthy(&server_url).await;
    // Admin commands reach the server; they need no database password themselves.
    register_put_get(tmp, &dir, &server_url, b"multi-host").await;
    srv.kill();
}
