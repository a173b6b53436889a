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
        // -o into something that is not a regular file (a pipe here, /dev/null or /dev/stdout
        // in practice) writes into it and leaves it what it was, never renames a file over it.
        use std::os::unix::fs::FileTypeExt;
        let fifo = env.tmp.path().join("out.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let mut c = env.client(&home, &["get", "db/key", "--version", "1", "-o"]);
        c.arg(&fifo);
        ok(&run(c).await);
        assert_eq!(reader.join().unwrap(), b"first-secret");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
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

/// The standard `age` tool (Debian package `age`) must decrypt what keysafe stored, with the
/// client's identity file: keysafe's encryption is plain age, not a private format.
#[tokio::test(flavor = "multi_thread")]
async fn the_age_tool_decrypts_a_keysafe_payload_and_sharing_works_end_to_end() {
    let env = Env::new().await;
    let secret = env.org("acme").await;
    let (alice, _) = env.register("acme", &secret).await;
    let (bob, bob_fp) = env.register("acme", &secret).await;
    let alice_fp = {
        let out = ok(&run(env.client(&alice, &["whoami", "--json"])).await);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v["recipient"].as_str().unwrap().starts_with("age1"));
        v["fingerprint"].as_str().unwrap().to_owned()
    };
    let plain = b"hdfs-zone-key-0123456789abcdef".to_vec();
    let out = ok(&run_with_stdin(env.client(&alice, &["put", "zone/key"]), plain.clone()).await);
    assert!(out.contains("encrypted"), "{out}");

    // What the server serves is an age file; the age CLI opens it with alice's identity.
    let stored = env.tmp.path().join("stored.age");
    ok(&run(env.client(
        &alice,
        &["get", "zone/key", "--raw", "-o", stored.to_str().unwrap()],
    ))
    .await);
    let bytes = std::fs::read(&stored).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_slice()));
    let age = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(alice.join("age.key"))
        .arg(&stored)
        .output()
        .expect("the age binary (apt-get install age)");
    assert!(
        age.status.success(),
        "{}",
        String::from_utf8_lossy(&age.stderr)
    );
    assert_eq!(age.stdout, plain);
    // bob's identity does not open it.
    let age = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(bob.join("age.key"))
        .arg(&stored)
        .output()
        .unwrap();
    assert!(!age.status.success());
    // keysafe get decrypts for the owner.
    let got = run(env.client(&alice, &["get", "zone/key"])).await;
    assert_eq!(got.stdout, plain);

    // Not shared: bob sees nothing (exit 3, not found).
    fails_with(
        &run(env.client(&bob, &["get", "zone/key", "--owner", &alice_fp])).await,
        3,
    );
    // Share: bob decrypts, and the age file now opens with bob's identity too.
    let out = ok(&run(env.client(&alice, &["share", "zone/key", "--with", &bob_fp])).await);
    assert!(out.contains("Shared"), "{out}");
    let got = run(env.client(&bob, &["get", "zone/key", "--owner", &alice_fp])).await;
    assert_eq!(got.stdout, plain);
    let acl = ok(&run(env.client(&alice, &["acl", "zone/key", "--json"])).await);
    let v: serde_json::Value = serde_json::from_str(&acl).unwrap();
    assert_eq!(v["grants"][0]["grantee"], bob_fp.as_str());
    assert_eq!(v["recipients"].as_array().unwrap().len(), 2);
    let shared = ok(&run(env.client(&bob, &["shared", "--json"])).await);
    assert!(shared.contains("zone/key"), "{shared}");
    // Read-only: bob cannot write (exit 4).
    fails_with(
        &run_with_stdin(
            env.client(&bob, &["put", "zone/key", "--owner", &alice_fp]),
            b"x".to_vec(),
        )
        .await,
        4,
    );
    // Unshare says plainly what revocation cannot do, and bob is out.
    let out = ok(&run(env.client(&alice, &["unshare", "zone/key", "--with", &bob_fp])).await);
    assert!(out.contains("still has what it fetched"), "{out}");
    fails_with(
        &run(env.client(
            &bob,
            &["get", "zone/key", "--owner", &alice_fp, "--no-cache"],
        ))
        .await,
        3,
    );
    // --raw stores bytes as given.
    ok(&run_with_stdin(
        env.client(&alice, &["put", "--raw", "mine"]),
        b"as-is".to_vec(),
    )
    .await);
    assert_eq!(
        run(env.client(&alice, &["get", "mine", "--raw"]))
            .await
            .stdout,
        b"as-is"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_tokens_groups_and_client_sweeps_through_the_binary() {
    let env = Env::new().await;
    let secret = env.org("acme").await;
    // A one-time registration token registers once.
    let out = ok(&run(env.admin(&["org", "token", "acme", "--ttl", "10m", "--json"])).await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let (gw1, gw1_fp) = env.register("acme", &token).await;
    let home = env.tmp.path().join("second-use");
    let token_file = env.tmp.path().join("token.txt");
    std::fs::write(&token_file, &token).unwrap();
    let mut c = keysafe(env.tmp.path());
    c.args([
        "register",
        "--server",
        &env.ts.url,
        "--org",
        "acme",
        "--auth-file",
    ])
    .arg(&token_file)
    .arg("--home")
    .arg(&home);
    fails_with(&run(c).await, 4);

    // Groups: created by an administrator for gw1, then gw2 added and admitted by gw1.
    let (gw2, gw2_fp) = env.register("acme", &secret).await;
    ok(&run(env.admin(&["group", "add", "kms", "--org", "acme", "--member", &gw1_fp])).await);
    ok(&run(env.admin(&["group", "add-member", "kms", "--org", "acme", &gw2_fp])).await);
    let show = ok(&run(env.client(&gw1, &["group", "show", "kms", "--json"])).await);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    let waiting: Vec<_> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["has_current_key"] == false)
        .collect();
    assert_eq!(waiting.len(), 1);
    ok(&run(env.client(&gw1, &["group", "admit", "kms", &gw2_fp])).await);
    ok(&run_with_stdin(
        env.client(&gw1, &["put", "hadoop/k1", "--owner", "group:kms"]),
        b"material".to_vec(),
    )
    .await);
    assert_eq!(
        run(env.client(&gw2, &["get", "hadoop/k1", "--owner", "group:kms"]))
            .await
            .stdout,
        b"material"
    );
    let list = ok(&run(env.admin(&["group", "list", "--org", "acme", "--json"])).await);
    assert!(list.contains("\"kms\""), "{list}");
    ok(&run(env.admin(&["group", "remove-member", "kms", "--org", "acme", &gw2_fp])).await);
    fails_with(
        &run(env.client(
            &gw2,
            &["get", "hadoop/k1", "--owner", "group:kms", "--no-cache"],
        ))
        .await,
        3,
    );

    // reset-token and disable-unactivated.
    let out = ok(&run(env.admin(&["client", "reset-token", &gw1_fp])).await);
    assert!(out.contains("new one"), "{out}");
    ok(&run(env.client(&gw1, &["whoami"])).await);
    let (_idle, idle_fp) = env.register("acme", &secret).await;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = ok(&run(env.admin(&[
        "client",
        "disable-unactivated",
        "--older-than",
        "0s",
        "--json",
    ]))
    .await);
    assert!(out.contains(&idle_fp), "{out}");
    assert!(!out.contains(&gw1_fp), "{out}");
    let list = ok(&run(env.admin(&["client", "list", "--state", "disabled", "--json"])).await);
    assert!(list.contains(&idle_fp));
}
