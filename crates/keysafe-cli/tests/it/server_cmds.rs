//! `init`, `serve` and `admin` through the binary.

use crate::{fails_with, keysafe, ok, run, spawn_serve, wait_healthy};
use keysafe_proto::ClientFingerprint;
use std::path::Path;

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn init_creates_everything_privately_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut c = keysafe(tmp.path());
    c.args(["init", "--data-dir"]).arg(&dir).args([
        "--listen",
        "127.0.0.1:11999",
        "--hostname",
        "ks.example",
        "--json",
    ]);
    let out = ok(&run(c).await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for f in [
        "keysafe.toml",
        "tls/server.crt",
        "tls/server.key",
        "root.key",
        "keysafe.db",
        "admin/client.key",
        "admin/client.crt",
        "admin/client.toml",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("root.key")), 0o600);
        assert_eq!(mode(&dir.join("tls/server.key")), 0o600);
        assert_eq!(mode(&dir.join("admin/client.key")), 0o600);
        assert_eq!(mode(&dir.join("admin")), 0o700);
    }
    assert_eq!(std::fs::metadata(dir.join("root.key")).unwrap().len(), 32);
    // The printed fingerprint is the SPKI hash of the certificate on disk.
    let pem = std::fs::read(dir.join("tls/server.crt")).unwrap();
    let certs = keysafe_client::home::load_ca(&dir.join("tls/server.crt")).unwrap();
    let fp = ClientFingerprint::of_certificate(&certs[0]).unwrap();
    assert_eq!(v["server_fingerprint"].as_str().unwrap(), fp.as_str());
    assert_eq!(v["url"].as_str().unwrap(), "https://127.0.0.1:11999");
    let toml = std::fs::read_to_string(dir.join("keysafe.toml")).unwrap();
    assert!(toml.contains("listen = \"127.0.0.1:11999\""));
    assert!(toml.contains("hostname = \"ks.example\""));

    // A second init changes nothing.
    let root_before = std::fs::read(dir.join("root.key")).unwrap();
    let mut again = keysafe(tmp.path());
    again.args(["init", "--data-dir"]).arg(&dir);
    let err = fails_with(&run(again).await, 1);
    assert!(err.contains("already initialised"), "{err}");
    assert_eq!(std::fs::read(dir.join("root.key")).unwrap(), root_before);
    assert_eq!(std::fs::read(dir.join("tls/server.crt")).unwrap(), pem);

    // A non-empty foreign directory is refused too.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("unrelated"), "x").unwrap();
    let mut c = keysafe(tmp.path());
    c.args(["init", "--data-dir"]).arg(&other);
    assert!(fails_with(&run(c).await, 1).contains("not empty"));
}

/// `--storage` takes a database path (relative to the data directory) or a URL; a URL init
/// cannot use (a database that does not answer, a bad parameter, another scheme) or one
/// carrying a password stops init with a clear one-line error and leaves nothing behind (and
/// never repeats the password).
#[tokio::test(flavor = "multi_thread")]
async fn init_storage_takes_a_path_or_url_and_refuses_what_it_cannot_use() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut c = keysafe(tmp.path());
    c.args(["init", "--data-dir"])
        .arg(&dir)
        .args(["--storage", "db/main.db", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&run(c).await)).unwrap();
    let canonical = dir.canonicalize().unwrap();
    assert_eq!(
        v["database"].as_str().unwrap(),
        canonical.join("db/main.db").to_str().unwrap()
    );
    assert!(dir.join("db/main.db").exists());
    assert!(!dir.join("keysafe.db").exists());
    let toml = std::fs::read_to_string(dir.join("keysafe.toml")).unwrap();
    assert!(toml.contains("url = \"sqlite:db/main.db\""), "{toml}");
    let config = keysafe_server::config::Config::load(&dir).unwrap();
    assert_eq!(config.storage.to_string(), v["database"].as_str().unwrap());

    let abs = tmp.path().join("elsewhere.db");
    let dir2 = tmp.path().join("data2");
    let mut c = keysafe(tmp.path());
    c.args(["init", "--data-dir"])
        .arg(&dir2)
        .arg("--storage")
        .arg(format!("sqlite:{}", abs.display()));
    ok(&run(c).await);
    assert!(abs.exists());

    // A PostgreSQL server that is not there (nothing listens on the port).
    let unreachable = format!(
        "postgres://keysafe@127.0.0.1:{}/keysafe?target_session_attrs=read-write",
        crate::free_port("127.0.0.1")
    );
    for (url, needle) in [
        (unreachable.as_str(), "cannot connect to the database"),
        (
            "postgres://keysafe@127.0.0.1/keysafe?sslmode=allow",
            "sslmode=allow",
        ),
        (
            "postgres://keysafe:hunter2@127.0.0.1/keysafe",
            "must not contain the password",
        ),
        ("mysql://db/keysafe", "expected sqlite:PATH or postgres://"),
    ] {
        let fresh = tmp.path().join("refused");
        let mut c = keysafe(tmp.path());
        c.args(["init", "--data-dir"])
            .arg(&fresh)
            .args(["--storage", url]);
        let err = fails_with(&run(c).await, 1);
        assert!(err.contains(needle), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            !fresh.exists(),
            "{url}: init left {} behind",
            fresh.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn print_default_config_is_the_documented_template() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = keysafe(tmp.path());
    c.args(["serve", "--print-default-config"]);
    let text = ok(&run(c).await);
    let parsed = keysafe_server::config::Config::parse(Path::new("/d"), &text).unwrap();
    assert_eq!(parsed.listen.port(), 11371);
    for key in [
        "listen",
        "hostname",
        "tls_cert",
        "tls_key",
        "tls_min_version",
        "handshake_timeout",
        "header_read_timeout",
        "first_byte_timeout",
        "idle_timeout",
        "request_timeout",
        "body_read_timeout",
        "http2_keep_alive_interval",
        "max_connections",
        "max_connections_per_address",
        "pending_limit",
        "max_concurrent",
        "anonymous_interval",
        "shutdown_grace",
        "url",
        "type",
        "root_key_file",
        "max_deposit_size",
        "identity_cache_ttl",
        "format",
        "level",
    ] {
        let line = text
            .lines()
            .position(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("{key} missing"));
        // The nearest line above that is not another key must be a comment.
        let lines: Vec<&str> = text.lines().collect();
        let mut i = line;
        while i > 0 && lines[i - 1].contains(" = ") && !lines[i - 1].starts_with('#') {
            i -= 1;
        }
        assert!(
            i > 0 && lines[i - 1].starts_with('#'),
            "{key} is not documented"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_initialises_on_first_start_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fresh");
    let (child, url) = spawn_serve(tmp.path(), &dir, None);
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let health = wait_healthy(&url).await;
    assert_eq!(health.status, "ok");
    // The administrator identity works against the running server.
    let mut c = keysafe(tmp.path());
    c.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["org", "add", "acme", "--json"]);
    let created: serde_json::Value = serde_json::from_str(&ok(&run(c).await)).unwrap();
    assert_eq!(created.as_object().unwrap().len(), 2);
    assert_eq!(created["name"], "acme");
    assert_eq!(created["auth_secret"].as_str().unwrap().len(), 43);

    child.signal("-TERM");
    let out = child.wait_with_output_async().await;
    assert!(
        out.status.success(),
        "serve exited with {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Initialised keysafe data directory"),
        "{stdout}"
    );
    assert!(stdout.contains(health.fingerprint.as_str()), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(
        !stderr.contains(created["auth_secret"].as_str().unwrap()),
        "secret in the log"
    );

    // A restart serves the same data with the same identity (on the port init recorded).
    let (child, url) = spawn_serve(tmp.path(), &dir, Some(port));
    let again = wait_healthy(&url).await;
    assert_eq!(again.fingerprint, health.fingerprint);
    let mut c = keysafe(tmp.path());
    c.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["org", "list", "--json"]);
    let orgs: serde_json::Value = serde_json::from_str(&ok(&run(c).await)).unwrap();
    assert!(
        orgs["orgs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "acme")
    );
    // SIGINT (Ctrl-C) stops it gracefully too.
    child.signal("-INT");
    let out = child.wait_with_output_async().await;
    assert!(out.status.success(), "serve exited with {:?}", out.status);
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGINT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_a_wrong_or_exposed_root_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut c = keysafe(tmp.path());
    c.args(["init", "--data-dir"])
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"]);
    ok(&run(c).await);
    let root = dir.join("root.key");
    let original = std::fs::read(&root).unwrap();

    // Group- or world-readable: refused with the fix.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = keysafe(tmp.path());
        c.args(["serve", "--data-dir"]).arg(&dir);
        let err = fails_with(&run(c).await, 1);
        assert!(
            err.contains(&format!("chmod 600 {}", root.display())),
            "{err}"
        );
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // A different root key: refused, clearly, without printing the key.
    let mut wrong = original.clone();
    wrong[0] ^= 0xff;
    std::fs::write(&root, &wrong).unwrap();
    let mut c = keysafe(tmp.path());
    c.args(["serve", "--data-dir"]).arg(&dir);
    let err = fails_with(&run(c).await, 1);
    assert!(err.contains("wrong root key"), "{err}");
    assert!(
        !err.contains(&hex::encode(&wrong)),
        "the key must not be printed"
    );

    // A truncated root key file.
    std::fs::write(&root, &original[..16]).unwrap();
    let mut c = keysafe(tmp.path());
    c.args(["serve", "--data-dir"]).arg(&dir);
    let err = fails_with(&run(c).await, 1);
    assert!(err.contains("expected exactly 32 bytes"), "{err}");

    // The right key still opens everything: the refusals changed nothing.
    std::fs::write(&root, &original).unwrap();
    let (_child, url) = spawn_serve(tmp.path(), &dir, None);
    assert_eq!(wait_healthy(&url).await.status, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_needs_an_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = keysafe(tmp.path());
    c.args(["admin", "org", "list"]);
    let err = fails_with(&run(c).await, 2);
    assert!(err.contains("--data-dir"), "{err}");
}
