//! Seals through the real binary: SoftHSM2 over PKCS#11 with a throwaway token per
//! test (SOFTHSM2_CONF is handed to each child process), the passphrase seal, seal migration,
//! and a kill -9 in the middle of re-wrapping.
//!
//! One file per scenario: `pkcs11`, `passphrase`, `migration` (between seals), `rewrap`
//! (keyring rotation) and `backup` (of an HSM-sealed server). This module holds what they share
//! and what `cluster` and `seal_crash` reuse: a SoftHSM2 token store, a `keysafe serve` child,
//! health polling and client registration.

mod backup;
mod migration;
mod passphrase;
mod pkcs11;
mod rewrap;

use crate::{keysafe, ok, run};
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
    crate::anonymous_client(url).health().await.ok()
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
