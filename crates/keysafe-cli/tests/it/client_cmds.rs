//! Client and admin commands through the binary against a TestServer.

use crate::{fails_with, keysafe, ok, run, run_with_stdin};
use keysafe_testkit::TestServer;
use std::path::{Path, PathBuf};

struct Env {
    ts: TestServer,
    tmp: tempfile::TempDir,
}

impl Env {
    async fn new() -> Self {
        Self {
            ts: TestServer::start().await,
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn admin(&self, args: &[&str]) -> std::process::Command {
        let mut c = keysafe(self.tmp.path());
        c.args(["admin", "--data-dir"])
            .arg(&self.ts.data_dir)
            .args(args);
        c
    }

    fn client(&self, home: &Path, args: &[&str]) -> std::process::Command {
        let mut c = keysafe(self.tmp.path());
        c.args(args).env("KEYSAFE_HOME", home);
        c
    }

    async fn org(&self, name: &str) -> String {
        let out = ok(&run(self.admin(&["org", "add", name, "--json"])).await);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["auth_secret"].as_str().unwrap().to_owned()
    }

    /// Registers a client home through the binary; returns (home, fingerprint).
    async fn register(&self, org: &str, secret: &str) -> (PathBuf, String) {
        let home = self.tmp.path().join(format!("home-{}", rand_suffix()));
        let secret_file = self.tmp.path().join(format!("secret-{}", rand_suffix()));
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        let mut c = keysafe(self.tmp.path());
        c.args([
            "register",
            "--server",
            &self.ts.url,
            "--org",
            org,
            "--auth-file",
        ])
        .arg(&secret_file)
        .arg("--home")
        .arg(&home)
        .args(["--name", "test-host", "--json"]);
        let out = ok(&run(c).await);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (home, v["fingerprint"].as_str().unwrap().to_owned())
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn register_with_wrong_secret_writes_no_registration() {
    let env = Env::new().await;
    env.org("acme").await;
    let home = env.tmp.path().join("h");
    let mut c = keysafe(env.tmp.path());
    c.args([
        "register",
        "--server",
        &env.ts.url,
        "--org",
        "acme",
        "--auth",
        "not-the-secret-at-all",
        "--home",
    ])
    .arg(&home);
    let err = fails_with(&run(c).await, 4);
    assert!(err.contains("invalid_auth"), "{err}");
    assert!(!home.join("client.toml").exists());
    let list: serde_json::Value = serde_json::from_str(&ok(&run(
        env.admin(&["client", "list", "--org", "acme", "--json"])
    )
    .await))
    .unwrap();
    assert!(list["clients"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn full_client_workflow() {
    let env = Env::new().await;
    let secret = env.org("acme").await;
    let (home, fp) = env.register("acme", &secret).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(home.join("client.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, 0o600);
        let m = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o700);
    }
    let who: serde_json::Value =
        serde_json::from_str(&ok(&run(env.client(&home, &["whoami", "--json"])).await)).unwrap();
    assert_eq!(who["fingerprint"], fp.as_str());
    assert_eq!(who["state"], "active");

    // put from stdin and from a file
    ok(&run_with_stdin(
        env.client(&home, &["put", "db/key"]),
        b"first-secret".to_vec(),
    )
    .await);
    let file = env.tmp.path().join("payload.bin");
    std::fs::write(&file, [0u8, 159, 146, 150, 10]).unwrap();
    let mut c = env.client(&home, &["put", "db/key"]);
    c.arg(&file);
    let out = ok(&run(c).await);
    assert!(out.contains("version 2"), "{out}");

    // get to stdout (raw bytes), a version, and -o FILE (mode 0600)
    let got = run(env.client(&home, &["get", "db/key"])).await;
    ok(&got);
    assert_eq!(got.stdout, vec![0u8, 159, 146, 150, 10]);
    let got = run(env.client(&home, &["get", "db/key", "--version", "1"])).await;
    assert_eq!(got.stdout, b"first-secret");
    let dest = env.tmp.path().join("out.key");
    let mut c = env.client(&home, &["get", "db/key", "--version", "1", "-o"]);
    c.arg(&dest);
    ok(&run(c).await);
    assert_eq!(std::fs::read(&dest).unwrap(), b"first-secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // ls and versions
    ok(&run_with_stdin(env.client(&home, &["put", "db/other"]), b"x".to_vec()).await);
    ok(&run_with_stdin(env.client(&home, &["put", "web/tls"]), b"y".to_vec()).await);
    let ls = ok(&run(env.client(&home, &["ls", "db/"])).await);
    assert!(
        ls.contains("db/key") && ls.contains("db/other") && !ls.contains("web/tls"),
        "{ls}"
    );
    let vs: serde_json::Value = serde_json::from_str(&ok(&run(
        env.client(&home, &["versions", "db/key", "--json"])
    )
    .await))
    .unwrap();
    assert_eq!(vs["versions"].as_array().unwrap().len(), 2);
    assert_eq!(vs["versions"][0]["creator"], fp.as_str());

    // compare-and-set
    let stale = run_with_stdin(
        env.client(&home, &["put", "db/key", "--if-match", "1"]),
        b"z".to_vec(),
    )
    .await;
    assert!(fails_with(&stale, 5).contains("version_conflict"));

    // rm, undelete, purge
    ok(&run(env.client(&home, &["rm", "db/key"])).await);
    fails_with(&run(env.client(&home, &["get", "db/key"])).await, 5);
    ok(&run(env.client(&home, &["undelete", "db/key"])).await);
    assert_eq!(
        run(env.client(&home, &["get", "db/key", "--version", "1"]))
            .await
            .stdout,
        b"first-secret"
    );
    let err = fails_with(&run(env.client(&home, &["purge", "db/key"])).await, 2);
    assert!(err.contains("--yes"), "{err}");
    let out = ok(&run(env.client(&home, &["purge", "db/key", "--yes"])).await);
    assert!(out.contains("2 versions"), "{out}");
    fails_with(&run(env.client(&home, &["get", "db/key"])).await, 3);

    // bad names never reach the server
    let err = fails_with(&run(env.client(&home, &["get", "a/../b"])).await, 2);
    assert!(err.contains("A-Z a-z 0-9"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_client_lifecycle_through_the_binary() {
    let env = Env::new().await;
    env.org("beta").await;
    let set: serde_json::Value = serde_json::from_str(&ok(&run(env.admin(&[
        "org",
        "set-auth",
        "beta",
        "--approval",
        "--json",
    ]))
    .await))
    .unwrap();
    assert_eq!(set["auth_mode"], "approval");
    let home = env.tmp.path().join("pending-home");
    let mut c = keysafe(env.tmp.path());
    c.args([
        "register",
        "--server",
        &env.ts.url,
        "--org",
        "beta",
        "--home",
    ])
    .arg(&home);
    let o = run(c).await;
    let out = ok(&o);
    assert!(out.contains("as pending"), "{out}");
    let fp = out
        .lines()
        .find_map(|l| l.strip_prefix("Client fingerprint: "))
        .unwrap()
        .to_owned();

    let pending: serde_json::Value = serde_json::from_str(&ok(&run(
        env.admin(&["client", "list", "--state", "pending", "--json"])
    )
    .await))
    .unwrap();
    assert_eq!(pending["clients"][0]["fingerprint"], fp.as_str());
    let err = fails_with(
        &run_with_stdin(env.client(&home, &["put", "k"]), b"v".to_vec()).await,
        4,
    );
    assert!(err.contains("client_pending"), "{err}");

    ok(&run(env.admin(&["client", "approve", &fp])).await);
    ok(&run_with_stdin(env.client(&home, &["put", "k"]), b"v".to_vec()).await);
    ok(&run(env.admin(&["client", "disable", &fp])).await);
    let err = fails_with(&run(env.client(&home, &["whoami"])).await, 4);
    assert!(err.contains("client_disabled"), "{err}");
    ok(&run(env.admin(&["client", "enable", &fp])).await);
    assert_eq!(run(env.client(&home, &["get", "k"])).await.stdout, b"v");

    // A plain client home is not an administrator.
    let mut c = keysafe(env.tmp.path());
    c.args(["admin", "--home"]).arg(&home).args(["org", "list"]);
    let err = fails_with(&run(c).await, 4);
    assert!(err.contains("forbidden"), "{err}");

    // Rotating to a random secret prints it once.
    let r: serde_json::Value = serde_json::from_str(&ok(&run(
        env.admin(&["org", "set-auth", "beta", "--random", "--json"])
    )
    .await))
    .unwrap();
    assert_eq!(r["auth_secret"].as_str().unwrap().len(), 43);
    let table = ok(&run(env.admin(&["org", "list"])).await);
    assert!(
        table.contains("beta") && table.contains("secret"),
        "{table}"
    );
    assert!(!table.contains(r["auth_secret"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn world_readable_key_file_is_refused_with_the_fix() {
    let env = Env::new().await;
    let secret = env.org("acme").await;
    let (home, _) = env.register("acme", &secret).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = home.join("client.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        for args in [&["whoami"][..], &["ls"][..], &["get", "k"][..]] {
            let err = fails_with(&run(env.client(&home, args)).await, 8);
            assert!(
                err.contains(&format!("chmod 600 {}", key.display())),
                "{err}"
            );
        }
        let err = fails_with(
            &run_with_stdin(env.client(&home, &["put", "k"]), b"v".to_vec()).await,
            8,
        );
        assert!(err.contains("client.key"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        fails_with(&run(env.client(&home, &["whoami"])).await, 8);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        ok(&run(env.client(&home, &["whoami"])).await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unregistered_home_gets_a_clear_error() {
    let env = Env::new().await;
    let home = env.tmp.path().join("nothing-here");
    let err = fails_with(&run(env.client(&home, &["ls"])).await, 8);
    assert!(err.contains("keysafe register"), "{err}");
}
