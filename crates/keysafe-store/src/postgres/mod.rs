//! The PostgreSQL store: the multi-node backend. tokio-postgres (libpq-style multi-host URLs,
//! `target_session_attrs=read-write`) pooled by deadpool-postgres, TLS through rustls with
//! aws-lc-rs. Reads go through the pool; every write goes through one writer task per store
//! that commits whatever has queued up in one transaction (group commit), each change inside
//! its own savepoint, after locking the audit chain's head row so that the writers of every
//! node on the database run one at a time (see `writer`). Durability is PostgreSQL's: a change
//! is acknowledged after COMMIT returned, and nothing here lowers `synchronous_commit`.
//!
//! Failover: reads follow `route` (the primary, or any host that answers while none is
//! primary, so a standby keeps serving reads); writes fail with `ReadOnly` while only a standby
//! answers and reach the new primary by themselves after a promotion. Changes other nodes
//! cache are announced with NOTIFY and followed through `notify`.

mod audit;
mod cluster;
mod config;
mod errors;
mod export;
mod lifecycle;
mod migrate;
mod mutations;
mod notify;
mod reads;
mod route;
mod rows;
mod tls;
mod writer;

pub use config::{
    DEFAULT_LOCK_TIMEOUT, DEFAULT_POOL_SIZE, PgConfig, PgConfigError, PgPassword, SslMode,
};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use errors::pool_error;
use keysafe_core::store::{
    AdminStore, Applied, AuditAppendError, AuditHead, AuditKeyRecord, AuditStore, ClientRecord,
    DepositKey, DepositListing, DepositRecord, DepositStore, GrantRecord, GroupRecord, GroupStore,
    IdentityStore, ImportSummary, KekRecord, KekUsage, KeyringStore, Mutation, OrgRecord, Queued,
    RecordStream, Store, StoreError, StoreResult, StoreStats, VersionMeta, VersionRow, WrappedId,
    WrappedKeyRecord, WrappedKind, WrappedRow, version_row,
};
use keysafe_proto::api::ClientState;
use keysafe_proto::audit::{AuditCheckpoint, AuditEntry, AuditEvent};
use keysafe_proto::{ClientFingerprint, DepositVersion, GroupName, OrgName, Principal, Timestamp};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How many queued writes one transaction may take. Each runs in a savepoint, and a
/// transaction with more than 64 subtransactions that wrote overflows PostgreSQL's per-backend
/// subtransaction cache, which slows snapshots for every session (and standbys' replay) while
/// it is open.
const MAX_BATCH: usize = 60;
/// How long a request waits for a free connection before it answers `Unavailable`.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// Connections of the pool that serves reads from any host while no primary is reachable.
const ANY_HOST_POOL_SIZE: usize = 4;

pub struct PostgresStore {
    pool: route::Reads,
    listener: Arc<notify::Listener>,
    writer: mpsc::Sender<writer::Job>,
    audit_head: audit::SharedHead,
    counters: Arc<writer::Counters>,
    target: String,
    row_auth: keysafe_core::store::RowAuthSlot,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish()
    }
}

/// What one of the store's connections sees of its server (for status pages and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSessionInfo {
    /// The server's address and port (`None` over a unix socket).
    pub server_addr: Option<String>,
    pub server_port: Option<u16>,
    /// Whether the connection is encrypted.
    pub ssl: bool,
    /// Whether the server is a standby (in recovery).
    pub in_recovery: bool,
    /// `synchronous_commit` and `fsync` as this session sees them (keysafe needs both `on`).
    pub synchronous_commit: String,
    pub fsync: String,
    pub server_version: String,
}

impl PostgresStore {
    /// Initialises keysafe's schema in an empty database and opens it. `AlreadyExists` if
    /// keysafe already initialised this database.
    pub async fn create(cfg: &PgConfig) -> StoreResult<Self> {
        Self::connect(cfg, migrate::Expect::Empty).await
    }

    /// Opens a database keysafe initialised, applying any pending migrations. `NotFound` if
    /// keysafe never initialised it.
    pub async fn open(cfg: &PgConfig) -> StoreResult<Self> {
        Self::connect(cfg, migrate::Expect::Initialised).await
    }

    async fn connect(cfg: &PgConfig, expect: migrate::Expect) -> StoreResult<Self> {
        warn_if_unauthenticated(cfg);
        let tls = tls::connector(cfg)?;
        let hosts = u32::try_from(cfg.pg.get_hosts().len()).unwrap_or(u32::MAX);
        let per_host = cfg
            .pg
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10));
        let build = |pg: tokio_postgres::Config, size: usize| {
            let manager = Manager::from_config(
                pg,
                tls.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(POOL_WAIT))
                // Each host gets connect_timeout to answer; the TLS handshake and
                // authentication get a little more, so a server that accepts TCP and then
                // hangs cannot block us.
                .create_timeout(Some(
                    per_host.saturating_mul(hosts) + Duration::from_secs(10),
                ))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .build()
                .map_err(|e| StoreError::Backend(format!("connection pool: {e}")))
        };
        let pool = build(cfg.pg.clone(), cfg.pool_size)?;
        let mut any_host = cfg.pg.clone();
        any_host.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::Any);
        let route = route::Route::new(pool.clone(), build(any_host, ANY_HOST_POOL_SIZE)?);
        let head = {
            let mut conn = pool.get().await.map_err(pool_error)?;
            let client: &mut tokio_postgres::Client = &mut conn;
            migrate::run(client, expect).await?;
            warn_if_not_durable(client).await;
            audit::load_head(client).await?
        };
        let audit_head = Arc::new(std::sync::Mutex::new(head.clone()));
        let counters = Arc::new(writer::Counters::default());
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let row_auth = keysafe_core::store::RowAuthSlot::default();
        let w = writer::Writer {
            route: route.clone(),
            set_lock_timeout: format!("SET LOCAL lock_timeout = {}", cfg.lock_timeout.as_millis()),
            head,
            shared: audit_head.clone(),
            counters: counters.clone(),
            row_auth: row_auth.clone(),
        };
        tokio::spawn(w.run(rx, MAX_BATCH));
        Ok(Self {
            pool: route,
            listener: notify::Listener::new(cfg.clone()),
            writer: tx,
            audit_head,
            counters,
            target: cfg.target().to_owned(),
            row_auth,
        })
    }

    /// `user@host:port,.../db (sslmode=...)`, without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// How many times a write transaction was rolled back by the database (serialization
    /// failure, deadlock) and run again.
    pub fn transaction_retries(&self) -> u64 {
        self.counters.retries.load(Ordering::Relaxed)
    }

    /// What a pooled connection sees of its server.
    pub async fn session_info(&self) -> StoreResult<PgSessionInfo> {
        let row = reads::query_opt(
            &self.pool,
            "SELECT host(inet_server_addr()) AS addr, inet_server_port() AS port, \
                    COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), FALSE) \
                      AS ssl, \
                    pg_is_in_recovery() AS in_recovery, \
                    current_setting('synchronous_commit') AS synchronous_commit, \
                    current_setting('fsync') AS fsync, \
                    current_setting('server_version') AS server_version",
            &[],
        )
        .await?
        .ok_or_else(|| StoreError::Backend("session info returned no row".into()))?;
        Ok(PgSessionInfo {
            server_addr: rows::col(&row, "addr")?,
            server_port: rows::col::<Option<i32>>(&row, "port")?
                .and_then(|p| u16::try_from(p).ok()),
            ssl: rows::col(&row, "ssl")?,
            in_recovery: rows::col(&row, "in_recovery")?,
            synchronous_commit: rows::col(&row, "synchronous_commit")?,
            fsync: rows::col(&row, "fsync")?,
            server_version: rows::col(&row, "server_version")?,
        })
    }
}

/// One connection outside any pool, with the store's TLS settings (raw access for tests).
#[cfg(feature = "testing")]
pub(crate) async fn connect_raw(cfg: &PgConfig) -> StoreResult<tokio_postgres::Client> {
    let (client, connection) = cfg
        .pg
        .connect(tls::connector(cfg)?)
        .await
        .map_err(errors::store_error)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "raw PostgreSQL connection ended");
        }
    });
    Ok(client)
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the database writer has stopped".into())
}

/// `prefer` and `require` encrypt without checking whom to: fine on a loopback or unix socket,
/// not across a network.
fn warn_if_unauthenticated(cfg: &PgConfig) {
    if cfg.ssl_mode() == SslMode::VerifyFull {
        return;
    }
    let remote = cfg.pg.get_hosts().iter().any(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            !matches!(
                name.parse::<std::net::IpAddr>(),
                Ok(ip) if ip.is_loopback()
            ) && name != "localhost"
        }
        tokio_postgres::config::Host::Unix(_) => false,
    });
    if remote {
        tracing::warn!(
            target = cfg.target(),
            "the database server is not authenticated (sslmode is not verify-full): use \
             sslmode=verify-full with sslrootcert over any network you do not control"
        );
    }
}

async fn warn_if_not_durable(client: &tokio_postgres::Client) {
    let row = client
        .query_one(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit')",
            &[],
        )
        .await;
    if let Ok(row) = row {
        let fsync: String = row.try_get(0).unwrap_or_default();
        let sync: String = row.try_get(1).unwrap_or_default();
        if fsync != "on" || sync == "off" {
            tracing::warn!(
                fsync,
                synchronous_commit = sync,
                "PostgreSQL is not configured for durability: an acknowledged write may be \
                 lost in a crash; set fsync = on and synchronous_commit = on"
            );
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn apply_audited(
        &self,
        mutation: Mutation,
        audit: Option<AuditEvent>,
    ) -> StoreResult<Applied> {
        self.submit_audited(mutation, audit).await?.await
    }

    async fn submit_audited(
        &self,
        mutation: Mutation,
        audit: Option<AuditEvent>,
    ) -> StoreResult<Queued> {
        // The writer takes jobs in channel order and applies each batch in that order.
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(writer::Job::Mutate {
                mutation,
                audit,
                reply,
            })
            .await
            .map_err(|_| writer_stopped())?;
        Ok(Queued::reply(rx, writer_stopped))
    }
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<(), AuditAppendError> {
        if events.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) =
            self.writer.send(writer::Job::Audit { events, reply }).await
        {
            let events = match job {
                writer::Job::Audit { events, .. } => events,
                writer::Job::Mutate { .. } | writer::Job::Spooled { .. } => Vec::new(),
            };
            return Err(AuditAppendError {
                error: writer_stopped(),
                events,
            });
        }
        // The writer answers every job it takes, with the entries on failure. It never panics;
        // were it gone mid-batch, its entries would be gone with it.
        rx.await.unwrap_or_else(|_| {
            Err(AuditAppendError {
                error: writer_stopped(),
                events: Vec::new(),
            })
        })
    }

    async fn audit_entries(
        &self,
        from: u64,
        since: Option<Timestamp>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        audit::entries(&self.pool, from, since, limit).await
    }

    async fn audit_checkpoints(&self, from: u64) -> StoreResult<Vec<AuditCheckpoint>> {
        audit::checkpoints(&self.pool, from).await
    }

    /// The last head this store committed, or saw under the head lock when it last wrote
    /// (other nodes may have appended since).
    fn audit_head(&self) -> AuditHead {
        self.audit_head
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    async fn audit_signing_key(&self) -> StoreResult<Option<AuditKeyRecord>> {
        audit::signing_key(&self.pool).await
    }
}

#[async_trait]
impl AdminStore for PostgresStore {
    /// `Ok` when a primary answers and its schema is not newer than this binary's; `ReadOnly`
    /// when only a standby answers.
    async fn ping(&self) -> StoreResult<()> {
        let client = match self.pool.primary().get().await {
            Ok(c) => c,
            Err(e) if route::unreachable(&e) => {
                return Err(self.pool.refusal(pool_error(e)).await);
            }
            Err(e) => return Err(pool_error(e)),
        };
        match client.simple_query("SELECT 1").await {
            Ok(_) => migrate::check_not_newer(&**client).await,
            Err(e) => {
                if errors::classify(&e) == errors::Class::Connection {
                    drop(deadpool_postgres::Object::take(client));
                    return Err(self.pool.refusal(errors::store_error(e)).await);
                }
                Err(errors::store_error(e))
            }
        }
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        audit::stats(&self.pool).await
    }

    /// Closes the pool: idle connections go at once, connections in use when they come back.
    /// The writer stops once every handle is dropped.
    async fn close(&self) {
        self.pool.close();
    }

    async fn export(&self) -> StoreResult<RecordStream> {
        export::export(self.pool.primary()).await
    }

    async fn import(&self, records: RecordStream) -> StoreResult<ImportSummary> {
        let (summary, head) = export::import(self.pool.primary(), records).await?;
        // The writer adopts the new head when it next locks `audit_head`; callers of
        // `audit_head` see it now.
        if let Some(head) = head
            && let Ok(mut h) = self.audit_head.lock()
            && head.seq > h.seq
        {
            *h = head;
        }
        Ok(summary)
    }

    fn row_auth(&self) -> &keysafe_core::store::RowAuthSlot {
        &self.row_auth
    }
}

impl PostgresStore {
    /// Whether reads go to any host because no primary answered lately (a failover).
    pub fn is_degraded(&self) -> bool {
        self.pool.is_degraded()
    }
}

#[async_trait]
impl KeyringStore for PostgresStore {
    async fn load_keks(&self) -> StoreResult<Vec<KekRecord>> {
        reads::load_keks(&self.pool).await
    }

    async fn list_stale_wrapped(
        &self,
        kind: WrappedKind,
        current: u32,
        after: Option<&WrappedId>,
        limit: u32,
    ) -> StoreResult<Vec<WrappedRow>> {
        reads::list_stale_wrapped(&self.pool, kind, current, after, limit).await
    }

    async fn kek_usage(&self) -> StoreResult<Vec<KekUsage>> {
        reads::kek_usage(&self.pool).await
    }
}

#[async_trait]
impl IdentityStore for PostgresStore {
    async fn get_org(&self, name: &OrgName) -> StoreResult<Option<OrgRecord>> {
        reads::get_org(&self.pool, name).await
    }

    async fn list_orgs(&self) -> StoreResult<Vec<OrgRecord>> {
        reads::list_orgs(&self.pool).await
    }

    async fn get_client(&self, fp: &ClientFingerprint) -> StoreResult<Option<ClientRecord>> {
        reads::get_client(&self.pool, fp).await
    }

    async fn list_clients(
        &self,
        org: Option<&OrgName>,
        state: Option<ClientState>,
    ) -> StoreResult<Vec<ClientRecord>> {
        reads::list_clients(&self.pool, org, state).await
    }
}

#[async_trait]
impl DepositStore for PostgresStore {
    async fn get_deposit(&self, key: &DepositKey) -> StoreResult<Option<DepositRecord>> {
        reads::get_deposit(&self.pool, key).await
    }

    async fn get_version(
        &self,
        key: &DepositKey,
        version: Option<DepositVersion>,
    ) -> StoreResult<Option<VersionRow>> {
        Ok(reads::get_version(&self.pool, key, version)
            .await?
            .map(|(d, v)| version_row(d, v)))
    }

    async fn list_deposits(&self, q: DepositListing<'_>) -> StoreResult<Vec<DepositRecord>> {
        reads::list_deposits(&self.pool, q).await
    }

    async fn list_versions(&self, key: &DepositKey) -> StoreResult<Vec<VersionMeta>> {
        reads::list_versions(&self.pool, key).await
    }

    async fn get_grants(&self, key: &DepositKey) -> StoreResult<Vec<GrantRecord>> {
        reads::get_grants(&self.pool, key).await
    }

    async fn list_shared(
        &self,
        grantees: &[Principal],
    ) -> StoreResult<Vec<(DepositRecord, GrantRecord)>> {
        reads::list_shared(&self.pool, grantees).await
    }

    /// Rows are read afresh each time: nothing is kept.
    fn forget_cached_rows(&self) {}
}

#[async_trait]
impl GroupStore for PostgresStore {
    async fn get_group(&self, org: &OrgName, name: &GroupName) -> StoreResult<Option<GroupRecord>> {
        reads::get_group(&self.pool, org, name).await
    }

    async fn list_groups(
        &self,
        org: Option<&OrgName>,
        member: Option<&ClientFingerprint>,
    ) -> StoreResult<Vec<GroupRecord>> {
        reads::list_groups(&self.pool, org, member).await
    }

    async fn group_keys(
        &self,
        org: &OrgName,
        name: &GroupName,
        member: &ClientFingerprint,
    ) -> StoreResult<Vec<WrappedKeyRecord>> {
        reads::group_keys(&self.pool, org, name, member).await
    }

    async fn member_groups(
        &self,
        org: &OrgName,
        member: &ClientFingerprint,
    ) -> StoreResult<Vec<keysafe_core::store::MemberGroup>> {
        reads::member_groups(&self.pool, org, member).await
    }
}
