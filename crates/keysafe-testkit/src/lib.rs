//! Test kit. `TestServer::start()` initialises a throwaway data directory exactly as
//! `keysafe init` does, binds 127.0.0.1:0, runs the real server (`keysafe_server::run`) in the
//! background and hands back an administrator client; dropping it shuts the server down.
//! Helpers register real clients (real key pairs, real mutual TLS) and reach the database
//! directly, whatever its backend (`keysafe_store::testing`), for tampering tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keysafe_cli::cmd::init::{InitSummary, init_data_dir};
use keysafe_client::client::ClientOptions;
use keysafe_client::{ClientHome, KeysafeClient, RegisterOptions, ServerTrust, register};
use keysafe_proto::api::{AuthSecret, OrgCreateRequest};
use keysafe_proto::{ClientFingerprint, OrgName};
use keysafe_server::config::Config;
use keysafe_server::init::InitOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;
use tokio::sync::oneshot;

pub mod peek;

/// Installs a test log subscriber once (respects `KEYSAFE_LOG`, default warn).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYSAFE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub struct TestServer {
    _root: Option<TempDir>,
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    pub url: String,
    pub fingerprint: ClientFingerprint,
    pub summary: InitSummary,
    pub config: Config,
    pub app: keysafe_server::App,
    /// An administrator client (the identity `init` created).
    pub admin: KeysafeClient,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A registered client with its own home directory.
pub struct TestClient {
    _dir: Option<TempDir>,
    pub home: ClientHome,
    pub client: KeysafeClient,
    pub fingerprint: ClientFingerprint,
    pub org: OrgName,
}

impl TestClient {
    pub fn home_dir(&self) -> &Path {
        &self.home.dir
    }

    /// The end-to-end encryption layer over this client (its age identity from the home).
    pub fn vault(&self) -> keysafe_client::vault::Vault {
        keysafe_client::vault::Vault::from_home(&self.home, self.client.clone()).unwrap()
    }

    /// A second client made from the same home (another process on the same host).
    pub fn reopen(&self) -> KeysafeClient {
        KeysafeClient::from_home(&self.home).unwrap()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after letting `tweak` change its configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_init(|_| {}, tweak).await
    }

    /// Starts a server after letting `init` choose how the data directory is initialised (the
    /// seal, issue 5) and `tweak` change its configuration.
    pub async fn start_with_init(
        init: impl FnOnce(&mut InitOptions),
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        init_logging();
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("data");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut opts = InitOptions {
            data_dir: data_dir.clone(),
            listen: addr,
            hostname: "localhost".into(),
            seal: Default::default(),
            storage: Default::default(),
            passphrase: None,
        };
        init(&mut opts);
        let summary = init_data_dir(&opts).await.unwrap();
        let data_dir = summary.data_dir.clone();
        let mut config = Config::load(&data_dir).unwrap();
        tweak(&mut config);
        let app = keysafe_server::open_app(&config).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(keysafe_server::run(listener, app.clone(), async {
            let _ = rx.await;
        }));
        let admin_home = ClientHome::load(&summary.admin_home).unwrap();
        let admin = KeysafeClient::from_home(&admin_home).unwrap();
        Self {
            _root: Some(root),
            data_dir,
            addr,
            url: summary.url.clone(),
            fingerprint: summary.server_fingerprint.clone(),
            summary,
            config,
            app,
            admin,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The files that hold the store's data at rest, for tests that search them.
    pub fn files_at_rest(&self) -> Vec<PathBuf> {
        keysafe_store::testing::files_at_rest(&self.config.storage)
    }

    /// Everything the store holds at rest, the files one after another, for tests that search
    /// it for what must not be there. Panics when nothing could be read (a search of nothing
    /// proves nothing).
    pub fn bytes_at_rest(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in self.files_at_rest() {
            if let Ok(b) = std::fs::read(&p) {
                out.extend_from_slice(&b);
            }
        }
        assert!(!out.is_empty(), "no file of the store could be read");
        out
    }

    /// Creates an organisation and returns its auth secret.
    pub async fn create_org(&self, name: &str) -> AuthSecret {
        self.admin
            .create_org(&OrgCreateRequest {
                name: OrgName::parse(name).unwrap(),
                contacts: vec![],
            })
            .await
            .unwrap()
            .auth_secret
    }

    /// Registers a new client (fresh key pair, fresh home) into `org` with `secret`.
    pub async fn register(
        &self,
        org: &str,
        secret: Option<AuthSecret>,
    ) -> Result<TestClient, keysafe_client::ClientError> {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let done = register(RegisterOptions {
            home,
            servers: vec![self.url.clone()],
            org: OrgName::parse(org).unwrap(),
            auth_secret: secret,
            name: None,
            server_fingerprint: Some(self.fingerprint.clone()),
            ca_cert: None,
        })
        .await?;
        let client = KeysafeClient::from_home(&done.home).unwrap();
        Ok(TestClient {
            _dir: Some(dir),
            fingerprint: done.info.fingerprint.clone(),
            org: done.info.org.clone(),
            home: done.home,
            client,
        })
    }

    /// Creates `org` and registers an active client into it.
    pub async fn new_client(&self, org: &str) -> TestClient {
        let secret = match self
            .admin
            .list_orgs()
            .await
            .unwrap()
            .orgs
            .iter()
            .any(|o| o.name.as_str() == org)
        {
            true => self
                .admin
                .set_org_auth(
                    &OrgName::parse(org).unwrap(),
                    &keysafe_proto::api::OrgSetAuthRequest::Random,
                )
                .await
                .unwrap()
                .auth_secret
                .unwrap(),
            false => self.create_org(org).await,
        };
        self.register(org, Some(secret)).await.unwrap()
    }

    /// A client that presents no certificate at all.
    pub fn anonymous_client(&self) -> KeysafeClient {
        KeysafeClient::new(
            &self.url,
            None,
            &ServerTrust::Fingerprint(self.fingerprint.clone()),
            &ClientOptions::default(),
        )
        .unwrap()
    }

    /// A client with a fresh key pair that was never registered.
    pub fn unregistered_client(&self) -> (TempDir, KeysafeClient) {
        let dir = tempfile::tempdir().unwrap();
        let ident = ClientHome::ensure_identity(&dir.path().join("h"), "stranger").unwrap();
        let c = KeysafeClient::new(
            &self.url,
            Some(&ident),
            &ServerTrust::Fingerprint(self.fingerprint.clone()),
            &ClientOptions::default(),
        )
        .unwrap();
        (dir, c)
    }

    /// A direct read-write connection to the database, bypassing the server: what an intruder
    /// with database access can do.
    pub async fn raw_db(&self) -> keysafe_store::testing::RawDb {
        keysafe_store::testing::RawDb::connect(&self.config.storage)
            .await
            .unwrap()
    }

    pub fn service(&self) -> &Arc<keysafe_core::Service> {
        &self.app.state.service
    }

    /// Serves an existing data directory (a restart, or a restored one) on its configured
    /// address; `summary` is the original init summary when there is one.
    pub async fn open_existing(
        data_dir: &Path,
        summary: InitSummary,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        init_logging();
        let mut config = Config::load(data_dir).unwrap();
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = keysafe_server::open_app(&config).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(keysafe_server::run(listener, app.clone(), async {
            let _ = rx.await;
        }));
        let mut admin_home = ClientHome::load(&data_dir.join("admin")).unwrap();
        admin_home.config.servers = vec![config.local_url()];
        let admin = KeysafeClient::from_home(&admin_home).unwrap();
        Self {
            _root: None,
            data_dir: data_dir.to_owned(),
            addr,
            url: config.local_url(),
            fingerprint: app.fingerprint(),
            summary,
            config,
            app,
            admin,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and hands back its temporary root (so the data outlives the server).
    pub async fn stop_keep(mut self) -> Option<TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        self.app.state.service.store().ping().await.ok();
        self._root.take()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
