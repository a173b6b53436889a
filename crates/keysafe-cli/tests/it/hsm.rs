//! Seals through the real binary: SoftHSM2 over PKCS#11 with a throwaway token per
//! test (SOFTHSM2_CONF is handed to each child process), the passphrase seal, seal migration,
//! and a kill -9 in the middle of re-wrapping.

use crate::{fails_with, keysafe, ok, run};
use keysafe_client::client::Precondition;
use keysafe_client::{ClientError, KeysafeClient, RegisterOptions, register};
use keysafe_proto::api::Health;
use keysafe_proto::{DepositName, ErrorCode, OrgName};
use keysafe_testkit::TestStorage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub(crate) const PIN: &str = "4711-0815";

pub(crate) fn name(s: &str) -> DepositName {
    DepositName::parse(s).unwrap()
}

fn private_file(path: &Path, contents: &str) {
    use std::io::Write;
    let mut f = keysafe_core::seal::open_options_private()
        .open(path)
        .unwrap();
    f.write_all(contents.as_bytes()).unwrap();
}

/// A SoftHSM2 token store of its own, with one initialised token.
pub(crate) struct SoftHsm {
    pub(crate) conf: PathBuf,
    pub(crate) pin_file: PathBuf,
    pub(crate) tokens: PathBuf,
}

impl SoftHsm {
    pub(crate) fn new(dir: &Path, token: &str) -> Self {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let st = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                token,
                "--so-pin",
                "12345678",
                "--pin",
                PIN,
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "softhsm2-util failed");
        let pin_file = dir.join("hsm.pin");
        private_file(&pin_file, &format!("{PIN}\n"));
        Self {
            conf,
            pin_file,
            tokens,
        }
    }

    pub(crate) fn cmd(&self, home: &Path) -> Command {
        let mut c = keysafe(home);
        c.env("SOFTHSM2_CONF", &self.conf);
        c
    }

    /// Deletes the key object from outside keysafe, as an HSM administrator would.
    pub(crate) fn destroy_key(&self, token: &str, label: &str) {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .args([
                "--module",
                MODULE,
                "--token-label",
                token,
                "--login",
                "--pin",
                PIN,
            ])
            .args(["--delete-object", "--type", "secrkey", "--label", label])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pkcs11-tool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `keysafe serve` child, killed on drop.
pub(crate) struct Server(Option<Child>, pub(crate) String);

impl Server {
    pub(crate) fn start(mut c: Command, dir: &Path) -> Self {
        let cfg = keysafe_server::config::Config::load(dir).unwrap();
        // The log goes to a file next to the data directory (a pipe nobody reads would fill up).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .unwrap();
        c.args(["serve", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(log);
        Server(Some(c.spawn().unwrap()), cfg.local_url())
    }

    fn kill9(&mut self) {
        let mut c = self.0.take().unwrap();
        let st = Command::new("kill")
            .args(["-9", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let _ = c.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) async fn health(url: &str) -> Option<Health> {
    let c = KeysafeClient::new(
        url,
        None,
        &keysafe_client::ServerTrust::TrustOnFirstUse,
        &Default::default(),
    )
    .unwrap();
    c.health().await.ok()
}

/// Waits until the server answers health with `status`.
pub(crate) async fn wait_status(url: &str, status: &str) -> Health {
    for _ in 0..600 {
        if let Some(h) = health(url).await
            && h.status == status
        {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never reported {status}");
}

pub(crate) fn init(c: &mut Command, dir: &Path, port: u16) {
    c.args(["init", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
}

/// `init` on `storage`: for PostgreSQL, `--storage` names a fresh database of the shared
/// cluster.
fn init_on(c: &mut Command, dir: &Path, port: u16, storage: TestStorage) {
    init(c, dir, port);
    c.arg("--storage").arg(storage.template().url);
}

fn set_config(dir: &Path, from: &str, to: &str) {
    let p = dir.join("keysafe.toml");
    let t = std::fs::read_to_string(&p).unwrap();
    assert!(t.contains(from), "{from} not in the config");
    std::fs::write(&p, t.replace(from, to)).unwrap();
}

/// Creates an organisation through the admin CLI and registers a client home in it.
pub(crate) async fn client(
    mk: impl Fn() -> Command,
    dir: &Path,
    work: &Path,
    url: &str,
) -> KeysafeClient {
    let org = format!("org{}", free_port());
    let mut c = mk();
    c.args(["admin", "--data-dir"])
        .arg(dir)
        .args(["org", "add", &org, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&run(c).await)).unwrap();
    let secret = keysafe_proto::api::AuthSecret::new(v["auth_secret"].as_str().unwrap().to_owned());
    let done = register(RegisterOptions {
        home: work.join(format!("home-{org}")),
        servers: vec![url.to_owned()],
        org: OrgName::parse(&org).unwrap(),
        auth_secret: Some(secret),
        name: None,
        server_fingerprint: None,
        ca_cert: None,
    })
    .await
    .unwrap();
    KeysafeClient::from_home_with(
        &done.home,
        // These tests check what the server answers: no client-side cache in between.
        &keysafe_client::ClientOptions {
            use_cache: false,
            ..Default::default()
        },
    )
    .unwrap()
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(r: Result<T, ClientError>, code: ErrorCode) {
    match r {
        Err(ClientError::Api { code: c, .. }) => assert_eq!(c, code),
        other => panic!("expected {code}, got {other:?}"),
    }
}

async fn put_many(c: &KeysafeClient, prefix: &str, n: usize) -> BTreeMap<String, Vec<u8>> {
    let mut w = BTreeMap::new();
    for i in 0..n {
        let k = format!("{prefix}/{i}");
        let v = format!("{prefix} payload {i}").into_bytes();
        c.put(&name(&k), v.clone(), Precondition::None)
            .await
            .unwrap();
        w.insert(k, v);
    }
    w
}

async fn read_back(c: &KeysafeClient, w: &BTreeMap<String, Vec<u8>>) {
    for (k, v) in w {
        assert_eq!(
            &c.get(&name(k), None).await.unwrap().payload[..],
            &v[..],
            "{k}"
        );
    }
}

async fn pkcs11_seal_serves_and_destroying_the_hsm_key_seals_for_good(storage: TestStorage) {
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "ks-token");
    let dir = work.path().join("data");
    let port = free_port();
    let mut c = hsm.cmd(work.path());
    init_on(&mut c, &dir, port, storage);
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "ks-token",
        "--pkcs11-pin-file",
    ])
    .arg(&hsm.pin_file)
    .args(["--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&run(c).await)).unwrap();
    assert_eq!(v["seal"], "pkcs11");
    assert!(
        !dir.join("root.key").exists(),
        "no root key file under the HSM seal"
    );
    set_config(
        &dir,
        "check_interval = \"30s\"",
        "check_interval = \"200ms\"",
    );

    let srv = Server::start(hsm.cmd(work.path()), &dir);
    let h = wait_status(&srv.1, "ok").await;
    assert_eq!(h.seal.as_deref(), Some("pkcs11"));
    let cl = client(|| hsm.cmd(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "k", 5).await;
    read_back(&cl, &w).await;

    // Somebody deletes the key in the HSM: within the check interval the server seals itself.
    hsm.destroy_key("ks-token", "keysafe-seal");
    let h = wait_status(&srv.1, "sealed").await;
    assert!(h.sealed_reason.unwrap().contains("destroyed"));
    assert_code(cl.get(&name("k/0"), None).await, ErrorCode::Sealed);
    assert_code(
        cl.put(&name("k/9"), b"x".to_vec(), Precondition::None)
            .await,
        ErrorCode::Sealed,
    );

    // After a restart it stays sealed (it starts, it does not crash, it decrypts nothing).
    drop(srv);
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    let h = wait_status(&srv.1, "sealed").await;
    assert!(h.sealed_reason.unwrap().contains("keysafe-seal"));
    assert_code(cl.get(&name("k/1"), None).await, ErrorCode::Sealed);
    // Nothing can move the keyring away from the destroyed key either.
    drop(srv);
    let mut m = hsm.cmd(work.path());
    m.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["seal", "migrate", "--to", "file"]);
    let err = fails_with(&run(m).await, 1);
    assert!(err.contains("HSM key"), "{err}");
}

/// An HSM that goes away (its token store moved aside, as when the HSM or its token restarts)
/// and comes back is not a destroyed key: requests that need it fail with 503 meanwhile, the
/// periodic check does not seal the server, and it serves again once the token is back.
#[tokio::test(flavor = "multi_thread")]
async fn an_hsm_that_goes_away_and_comes_back_does_not_seal_the_server() {
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "flaky");
    let dir = work.path().join("data");
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "flaky",
        "--pkcs11-mode",
        "per-deposit",
        "--pkcs11-pin-file",
    ])
    .arg(&hsm.pin_file);
    ok(&run(c).await);
    set_config(
        &dir,
        "check_interval = \"30s\"",
        "check_interval = \"200ms\"",
    );
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| hsm.cmd(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "f", 5).await;
    read_back(&cl, &w).await;

    let away = work.path().join("tokens-away");
    std::fs::rename(&hsm.tokens, &away).unwrap();
    // Several check intervals pass while the token is away: requests that need the HSM fail
    // as unavailable, never as sealed, and the server does not seal itself.
    for i in 0..6 {
        assert_code(
            cl.get(&name(&format!("f/{}", i % 5)), None).await,
            ErrorCode::Unavailable,
        );
        let h = health(&srv.1).await.unwrap();
        assert_ne!(h.status, "sealed", "{h:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    std::fs::rename(&away, &hsm.tokens).unwrap();
    // Back: once the seal has reconnected, everything reads and writes again.
    let mut back = false;
    for _ in 0..300 {
        if cl.get(&name("f/0"), None).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "the server did not serve again after the HSM came back"
    );
    read_back(&cl, &w).await;
    let more = put_many(&cl, "g", 3).await;
    read_back(&cl, &more).await;
    assert_eq!(
        wait_status(&srv.1, "ok").await.seal.as_deref(),
        Some("pkcs11")
    );

    // Deleting the key is still final.
    hsm.destroy_key("flaky", "keysafe-seal");
    wait_status(&srv.1, "sealed").await;
    assert_code(cl.get(&name("f/1"), None).await, ErrorCode::Sealed);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_pin_is_a_clear_error_and_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "ks-token");
    let wrong = work.path().join("wrong.pin");
    private_file(&wrong, "0000-0000\n");
    let dir = work.path().join("data");
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "ks-token",
        "--pkcs11-pin-file",
    ])
    .arg(&wrong);
    let err = fails_with(&run(c).await, 1);
    assert!(err.contains("refused the PIN"), "{err}");
    assert!(!dir.exists(), "a failed init leaves nothing behind");

    // A good init, then a start with the wrong PIN: refused, data untouched.
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "ks-token",
        "--pkcs11-pin-file",
    ])
    .arg(&hsm.pin_file);
    ok(&run(c).await);
    let db_before = std::fs::read(dir.join("keysafe.db")).unwrap();
    let mut s = hsm.cmd(work.path());
    s.args(["serve", "--data-dir"])
        .arg(&dir)
        .arg("--pkcs11-pin-file")
        .arg(&wrong);
    let err = fails_with(&run(s).await, 1);
    assert!(err.contains("refused the PIN"), "{err}");
    assert_eq!(std::fs::read(dir.join("keysafe.db")).unwrap(), db_before);
    // A token that does not exist is named.
    set_config(
        &dir,
        "pkcs11_token = \"ks-token\"",
        "pkcs11_token = \"nope\"",
    );
    let mut s = hsm.cmd(work.path());
    s.args(["serve", "--data-dir"]).arg(&dir);
    assert!(fails_with(&run(s).await, 1).contains("no token labelled \"nope\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn per_deposit_mode_round_trips_and_needs_the_hsm_for_every_read() {
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "pd");
    let dir = work.path().join("data");
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "pd",
        "--pkcs11-key",
        "pd-key",
        "--pkcs11-mode",
        "per-deposit",
        "--pkcs11-pin-file",
    ])
    .arg(&hsm.pin_file);
    ok(&run(c).await);
    // No periodic check in this test: the per-deposit path itself must notice.
    set_config(&dir, "check_interval = \"30s\"", "check_interval = \"1h\"");
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| hsm.cmd(work.path()), &dir, work.path(), &srv.1).await;
    let mut w = put_many(&cl, "pd", 20).await;
    // Several versions of one deposit, and an empty payload.
    for v in 0..3 {
        let p = vec![v as u8; 100 + v];
        cl.put(&name("multi"), p.clone(), Precondition::None)
            .await
            .unwrap();
        w.insert("multi".into(), p);
    }
    cl.put(&name("empty"), Vec::new(), Precondition::None)
        .await
        .unwrap();
    w.insert("empty".into(), Vec::new());
    read_back(&cl, &w).await;
    let mut st = hsm.cmd(work.path());
    st.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["keyring", "status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&ok(&run(st).await)).unwrap();
    assert_eq!(s["per_deposit"], true);

    // A tampered data key is an integrity error (the HSM layer refuses it), not a crash, and
    // the server stays unsealed.
    {
        let storage = keysafe_server::config::Config::load(&dir).unwrap().storage;
        let mut db = keysafe_store::testing::RawDb::connect(&storage)
            .await
            .unwrap();
        let w = db
            .scalar(
                "SELECT wrapped_dek FROM deposit_versions WHERE name = 'pd/3'",
                &[],
            )
            .await
            .unwrap();
        let mut w = w.as_blob().unwrap().to_vec();
        w[20] ^= 1;
        let changed = db
            .execute(
                "UPDATE deposit_versions SET wrapped_dek = ?1 WHERE name = 'pd/3'",
                &[w.into()],
            )
            .await
            .unwrap();
        assert_eq!(changed, 1);
    }
    assert_code(cl.get(&name("pd/3"), None).await, ErrorCode::IntegrityError);
    assert_eq!(
        wait_status(&srv.1, "ok").await.seal.as_deref(),
        Some("pkcs11")
    );
    assert_eq!(
        &cl.get(&name("pd/4"), None).await.unwrap().payload[..],
        &w["pd/4"][..]
    );

    hsm.destroy_key("pd", "pd-key");
    // The very next read fails (sealed), and the server seals itself.
    assert_code(cl.get(&name("pd/0"), None).await, ErrorCode::Sealed);
    let h = wait_status(&srv.1, "sealed").await;
    assert!(h.seal.is_none());
    assert_code(cl.get(&name("pd/1"), None).await, ErrorCode::Sealed);
}

#[tokio::test(flavor = "multi_thread")]
async fn passphrase_seal_through_the_binary() {
    let work = tempfile::tempdir().unwrap();
    let pass = work.path().join("pass");
    private_file(&pass, "a long enough passphrase\n");
    let short = work.path().join("short");
    private_file(&short, "short\n");
    let wrong = work.path().join("wrong");
    private_file(&wrong, "another long passphrase\n");
    let dir = work.path().join("data");
    let port = free_port();
    // Too short: refused, nothing created.
    let mut c = keysafe(work.path());
    init(&mut c, &dir, port);
    c.args(["--seal", "passphrase", "--passphrase-file"])
        .arg(&short);
    assert!(fails_with(&run(c).await, 1).contains("at least 12"));
    assert!(!dir.exists());
    let mut c = keysafe(work.path());
    init(&mut c, &dir, port);
    c.args(["--seal", "passphrase", "--passphrase-file"])
        .arg(&pass);
    ok(&run(c).await);
    // A wrong passphrase at start is a clear error.
    let mut s = keysafe(work.path());
    s.args(["serve", "--data-dir"])
        .arg(&dir)
        .arg("--passphrase-file")
        .arg(&wrong);
    assert!(fails_with(&run(s).await, 1).contains("passphrase does not open the keyring"));
    // From the environment.
    let mut s = keysafe(work.path());
    s.env("KEYSAFE_PASSPHRASE", "a long enough passphrase");
    let srv = Server::start(s, &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| keysafe(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "p", 3).await;
    drop(srv);
    // Without one (no terminal): starts sealed; `admin unseal` opens it.
    let srv = Server::start(keysafe(work.path()), &dir);
    wait_status(&srv.1, "sealed").await;
    assert_code(cl.get(&name("p/0"), None).await, ErrorCode::Sealed);
    let mut u = keysafe(work.path());
    u.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["unseal", "--passphrase-file"])
        .arg(&wrong);
    assert!(fails_with(&run(u).await, 4).contains("does not open"));
    let mut u = keysafe(work.path());
    u.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["unseal", "--passphrase-file"])
        .arg(&pass);
    ok(&run(u).await);
    read_back(&cl, &w).await;
}

async fn kill_9_in_the_middle_of_rewrapping_loses_nothing(storage: TestStorage) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    let mut c = keysafe(work.path());
    init_on(&mut c, &dir, free_port(), storage);
    ok(&run(c).await);
    set_config(&dir, "rewrap_batch = 256", "rewrap_batch = 3");
    set_config(&dir, "rewrap_pause = \"0s\"", "rewrap_pause = \"40ms\"");
    let mut srv = Server::start(keysafe(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| keysafe(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "r", 150).await;
    let mut rot = keysafe(work.path());
    rot.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["keyring", "rotate", "--json"]);
    assert!(ok(&run(rot).await).contains("\"version\":2"));
    // Wait until the job is visibly half-way, then kill -9.
    let status = || {
        let mut s = keysafe(work.path());
        s.args(["admin", "--data-dir"])
            .arg(&dir)
            .args(["keyring", "status", "--json"]);
        s
    };
    let mut seen = None;
    for _ in 0..600 {
        let s: serde_json::Value = serde_json::from_str(&ok(&run(status()).await)).unwrap();
        let moved = s["versions"][1]["data_keys"].as_u64().unwrap();
        if moved > 0 {
            seen = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    srv.kill9();
    let seen = seen.expect("the re-wrap job never started");
    assert!(
        seen["rewrap_pending"].as_u64().unwrap() > 0,
        "killed after the job finished: {seen}"
    );

    // Restart: everything reads, and the job resumes to the end.
    let srv = Server::start(keysafe(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    read_back(&cl, &w).await;
    let mut done = None;
    for _ in 0..1200 {
        let s: serde_json::Value = serde_json::from_str(&ok(&run(status()).await)).unwrap();
        if s["rewrap_pending"] == 0 {
            done = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = done.expect("the re-wrap job did not resume");
    assert_eq!(done["versions"][1]["data_keys"], 150);
    read_back(&cl, &w).await;
    let mut r = keysafe(work.path());
    r.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["keyring", "retire", "1"]);
    ok(&run(r).await);
    read_back(&cl, &w).await;
    drop(srv);
}

#[tokio::test(flavor = "multi_thread")]
async fn seal_migration_file_to_hsm_to_new_hsm_key_to_passphrase() {
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "mig");
    let dir = work.path().join("data");
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    ok(&run(c).await);
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| hsm.cmd(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "m", 10).await;
    // Refused while the server runs.
    let mut m = hsm.cmd(work.path());
    m.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["seal", "migrate", "--to", "passphrase"]);
    assert!(fails_with(&run(m).await, 1).contains("in use by a running keysafe server"));
    drop(srv);

    let migrate = |args: &[&str]| {
        let mut m = hsm.cmd(work.path());
        m.args(["admin", "--data-dir"])
            .arg(&dir)
            .args(["seal", "migrate"])
            .args(args);
        m
    };
    let pin = hsm.pin_file.to_str().unwrap().to_owned();
    // file -> pkcs11, per-deposit.
    ok(&run(migrate(&[
        "--to",
        "pkcs11",
        "--pkcs11-token",
        "mig",
        "--pkcs11-key",
        "k1",
        "--pkcs11-mode",
        "per-deposit",
        "--pkcs11-pin-file",
        &pin,
    ]))
    .await);
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    assert_eq!(
        wait_status(&srv.1, "ok").await.seal.as_deref(),
        Some("pkcs11")
    );
    read_back(&cl, &w).await;
    drop(srv);
    // A new HSM key label (HSM key rotation), back to keyring mode.
    ok(&run(migrate(&[
        "--to",
        "pkcs11",
        "--pkcs11-key",
        "k2",
        "--pkcs11-mode",
        "keyring",
    ]))
    .await);
    // The old key can go now: nothing needs it.
    hsm.destroy_key("mig", "k1");
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    read_back(&cl, &w).await;
    drop(srv);
    // pkcs11 -> passphrase.
    let pass = work.path().join("pass");
    private_file(&pass, "migrated passphrase ok\n");
    ok(&run(migrate(&[
        "--to",
        "passphrase",
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]))
    .await);
    hsm.destroy_key("mig", "k2");
    let mut s = hsm.cmd(work.path());
    s.arg("--passphrase-file").arg(&pass);
    let mut s2 = hsm.cmd(work.path());
    s2.env("KEYSAFE_PASSPHRASE", "migrated passphrase ok");
    let srv = Server::start(s2, &dir);
    assert_eq!(
        wait_status(&srv.1, "ok").await.seal.as_deref(),
        Some("passphrase")
    );
    read_back(&cl, &w).await;
    let toml = std::fs::read_to_string(dir.join("keysafe.toml")).unwrap();
    assert!(toml.contains("type = \"passphrase\""));
    drop(srv);
    let _ = s;
}

#[tokio::test(flavor = "multi_thread")]
async fn hsm_sealed_backup_restores_only_where_the_key_is() {
    use age::secrecy::ExposeSecret;
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "bk");
    let dir = work.path().join("data");
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "bk",
        "--pkcs11-pin-file",
    ])
    .arg(&hsm.pin_file);
    ok(&run(c).await);
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| hsm.cmd(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "b", 5).await;
    let id = age::x25519::Identity::generate();
    let id_file = work.path().join("id.txt");
    std::fs::write(&id_file, id.to_string().expose_secret()).unwrap();
    let backup = work.path().join("b.age");
    let mut b = hsm.cmd(work.path());
    b.args(["admin", "--data-dir"])
        .arg(&dir)
        .args([
            "backup",
            "create",
            "--recipient",
            &id.to_public().to_string(),
            "-o",
        ])
        .arg(&backup);
    ok(&run(b).await);
    // The root key cannot be asked of an HSM seal.
    let mut b = hsm.cmd(work.path());
    b.args(["admin", "--data-dir"])
        .arg(&dir)
        .args([
            "backup",
            "create",
            "--include-root-key",
            "--recipient",
            &id.to_public().to_string(),
            "-o",
        ])
        .arg(work.path().join("x.age"));
    assert!(fails_with(&run(b).await, 2).contains("file seal"));
    drop(srv);

    // Another host: its own HSM with a token of the same name but not the key.
    let other = tempfile::tempdir().unwrap();
    let hsm2 = SoftHsm::new(other.path(), "bk");
    let target = work.path().join("elsewhere");
    // The module path comes from the backup: never loaded unless the operator confirms it.
    let mut r = hsm2.cmd(work.path());
    r.args(["restore", "--from"])
        .arg(&backup)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&target)
        .arg("--pkcs11-pin-file")
        .arg(&hsm2.pin_file);
    let err = fails_with(&run(r).await, 2);
    assert!(
        err.contains("--pkcs11-module") && err.contains(MODULE),
        "{err}"
    );
    assert!(!target.exists());
    let mut r = hsm2.cmd(work.path());
    r.args(["restore", "--from"])
        .arg(&backup)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&target)
        .args(["--pkcs11-module", MODULE])
        .arg("--pkcs11-pin-file")
        .arg(&hsm2.pin_file);
    let err = fails_with(&run(r).await, 1);
    assert!(
        err.contains("HSM key") && err.contains("cannot be used here"),
        "{err}"
    );
    assert!(!target.exists());
    // Where the key is, it restores and serves.
    let port = free_port();
    let mut r = hsm.cmd(work.path());
    r.args(["restore", "--from"])
        .arg(&backup)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&target)
        .args(["--pkcs11-module", MODULE])
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    ok(&run(r).await);
    let srv = Server::start(hsm.cmd(work.path()), &target);
    wait_status(&srv.1, "ok").await;
    let home_dir = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("home-")
        })
        .unwrap();
    let mut home = keysafe_client::ClientHome::load(&home_dir).unwrap();
    home.config.servers = vec![srv.1.clone()];
    let moved = KeysafeClient::from_home_with(
        &home,
        // These tests check what the server answers: no client-side cache in between.
        &keysafe_client::ClientOptions {
            use_cache: false,
            ..Default::default()
        },
    )
    .unwrap();
    read_back(&moved, &w).await;
    let _ = cl;
    drop(srv);
}

// The HSM seal and a crash in the middle of re-wrapping, on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(multi_thread:
    pkcs11_seal_serves_and_destroying_the_hsm_key_seals_for_good,
    kill_9_in_the_middle_of_rewrapping_loses_nothing,
);
