//! Test kit. `TestServer::start()` initialises a throwaway data directory exactly as
//! `keysafe init` does, binds 127.0.0.1:0, runs the real server (`keysafe_server::run`) in the
//! background and hands back an administrator client; dropping it shuts the server down.
//! Helpers register real clients (real key pairs, real mutual TLS) and reach the database
//! directly, whatever its backend (`keysafe_store::testing`), for tampering tests.
//!
//! Storage: a SQLite file in the data directory by default; `TestServer::start_on(
//! TestStorage::Postgres)` initialises on a fresh database of the PostgreSQL cluster this test
//! binary shares (keysafe-testpg), through `init --storage postgres://...` as a user would.
//! [`storage_tests!`] turns a test written once, `async fn name(storage: TestStorage)`, into
//! `name::sqlite` and `name::postgres`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keysafe_cli::cmd::init::{InitSummary, init_data_dir};
use keysafe_client::client::ClientOptions;
use keysafe_client::{ClientHome, KeysafeClient, RegisterOptions, ServerTrust, register};
use keysafe_proto::api::{AuthSecret, OrgCreateRequest};
use keysafe_proto::{ClientFingerprint, OrgName};
use keysafe_server::config::Config;
use keysafe_server::config::StorageTemplate;
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

/// Which storage backend a [`TestServer`] keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStorage {
    /// A SQLite file in the data directory (the default `init` writes).
    Sqlite,
    /// A fresh database on the PostgreSQL cluster this test binary shares, started on first
    /// use and stopped when the binary exits. A missing PostgreSQL fails the test with what to
    /// install; it never skips.
    Postgres,
}

impl TestStorage {
    /// Both, for tests that loop over them.
    pub const ALL: [TestStorage; 2] = [TestStorage::Sqlite, TestStorage::Postgres];

    /// What `init --storage` gets for a fresh store of this kind (for PostgreSQL, a new
    /// database on the shared cluster).
    pub fn template(self) -> StorageTemplate {
        match self {
            TestStorage::Sqlite => StorageTemplate::default(),
            TestStorage::Postgres => {
                let cluster = pg_cluster();
                let db = cluster
                    .create_database("")
                    .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
                StorageTemplate {
                    url: cluster.url(&db),
                    password_file: None,
                }
            }
        }
    }
}

/// The database a configuration keeps its state in when that is PostgreSQL (the test kit's
/// URLs are `postgres://postgres@127.0.0.1:PORT/DB`).
fn pg_database_of(config: &Config) -> Option<String> {
    let url = config.storage.to_string();
    url.starts_with("postgres").then(|| {
        let path = url.rsplit('/').next().unwrap_or_default();
        path.split('?').next().unwrap_or_default().to_owned()
    })
}

/// The PostgreSQL cluster this test binary shares.
pub fn pg_cluster() -> &'static keysafe_testpg::TestCluster {
    keysafe_testpg::shared().unwrap_or_else(|e| {
        panic!("this test runs keysafe on PostgreSQL and needs a PostgreSQL server: {e}")
    })
}

/// Declares, for tests written once as `async fn name(storage: TestStorage)`, one test per
/// storage backend: `name::sqlite` and `name::postgres`. `multi_thread:` before the names runs
/// them on tokio's multi-threaded runtime.
#[macro_export]
macro_rules! storage_tests {
    (multi_thread: $($name:ident),* $(,)?) => {
        $( $crate::storage_tests!(@one (flavor = "multi_thread"), $name); )*
    };
    ($($name:ident),* $(,)?) => {
        $( $crate::storage_tests!(@one (), $name); )*
    };
    (@one ($($flavor:tt)*), $name:ident) => {
        mod $name {
            #[tokio::test($($flavor)*)]
            async fn sqlite() {
                super::$name($crate::TestStorage::Sqlite).await
            }
            #[tokio::test($($flavor)*)]
            async fn postgres() {
                super::$name($crate::TestStorage::Postgres).await
            }
        }
    };
}

pub struct TestServer {
    _root: Option<TempDir>,
    /// The backend the store is on.
    pub storage: TestStorage,
    /// The PostgreSQL database, when on PostgreSQL.
    pub pg_database: Option<String>,
    /// When this server was started (write-ahead log files older than that hold nothing of
    /// its store).
    started: std::time::SystemTime,
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

    /// Starts a server on `storage`.
    pub async fn start_on(storage: TestStorage) -> Self {
        Self::start_on_with_init(storage, |_| {}, |_| {}).await
    }

    /// Starts a server on `storage` after letting `tweak` change its configuration.
    pub async fn start_on_with(storage: TestStorage, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on_with_init(storage, |_| {}, tweak).await
    }

    /// Starts a server after letting `tweak` change its configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_init(|_| {}, tweak).await
    }

    /// Starts a server after letting `init` choose how the data directory is initialised (the
    /// seal) and `tweak` change its configuration.
    pub async fn start_with_init(
        init: impl FnOnce(&mut InitOptions),
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_on_with_init(TestStorage::Sqlite, init, tweak).await
    }

    /// Starts a server on `storage`, letting `init` choose how the data directory is
    /// initialised and `tweak` change its configuration.
    pub async fn start_on_with_init(
        storage: TestStorage,
        init: impl FnOnce(&mut InitOptions),
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        init_logging();
        let started = std::time::SystemTime::now();
        let storage_template = storage.template();
        let requested_url = storage_template.url.clone();
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("data");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut opts = InitOptions {
            data_dir: data_dir.clone(),
            listen: addr,
            hostname: "localhost".into(),
            seal: Default::default(),
            storage: storage_template,
            passphrase: None,
            join: false,
        };
        init(&mut opts);
        let chosen_here = opts.storage.url == requested_url;
        let summary = init_data_dir(&opts).await.unwrap();
        let data_dir = summary.data_dir.clone();
        let mut config = Config::load(&data_dir).unwrap();
        tweak(&mut config);
        // What the configuration names, whatever `init` chose: the tests on PostgreSQL must
        // really be on it.
        let pg_database = pg_database_of(&config);
        let on = match &pg_database {
            Some(_) => TestStorage::Postgres,
            None => TestStorage::Sqlite,
        };
        if chosen_here {
            assert_eq!(on, storage, "the server is not on the storage asked for");
        }
        let storage = on;
        let app = keysafe_server::open_app(&config).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(keysafe_server::run(listener, app.clone(), async {
            let _ = rx.await;
        }));
        let admin_home = ClientHome::load(&summary.admin_home).unwrap();
        let admin = KeysafeClient::from_home(&admin_home).unwrap();
        Self {
            _root: Some(root),
            storage,
            pg_database,
            started,
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

    /// The files that hold the store's data at rest, for tests that search them: for SQLite
    /// the database and its journal files; for PostgreSQL, after a checkpoint, the database's
    /// own files and the cluster's write-ahead log files written since this server started
    /// (the cluster is shared with the other tests of this binary: more to search, never
    /// less).
    pub fn files_at_rest(&self) -> Vec<PathBuf> {
        match &self.pg_database {
            None => keysafe_store::testing::files_at_rest(&self.config.storage),
            Some(db) => {
                let cluster = pg_cluster();
                let oid = cluster
                    .psql(
                        "postgres",
                        &format!("CHECKPOINT; SELECT oid FROM pg_database WHERE datname = '{db}'"),
                    )
                    .unwrap();
                let mut files = Vec::new();
                for (dir, since) in [
                    (
                        cluster.data_dir().join("base").join(oid.trim()),
                        std::time::UNIX_EPOCH,
                    ),
                    (cluster.data_dir().join("pg_wal"), self.started),
                ] {
                    for e in std::fs::read_dir(&dir).unwrap().flatten() {
                        let recent = e
                            .metadata()
                            .and_then(|m| m.modified())
                            .is_ok_and(|t| t >= since);
                        if e.file_type().is_ok_and(|t| t.is_file()) && recent {
                            files.push(e.path());
                        }
                    }
                }
                files
            }
        }
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
        let pg_database = pg_database_of(&config);
        let storage = match pg_database {
            Some(_) => TestStorage::Postgres,
            None => TestStorage::Sqlite,
        };
        Self {
            _root: None,
            storage,
            pg_database,
            // A restarted server's data may be in any log file.
            started: std::time::UNIX_EPOCH,
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
