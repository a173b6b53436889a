//! The SQLite store: one file in WAL mode with `synchronous=FULL`, so an acknowledged write
//! survives power loss. Reads go through a small pool of query-only connections; every write goes
//! through one writer task that commits whatever has queued up in a single transaction (group
//! commit), one fsync for many writes, each write isolated by a savepoint. Several processes
//! (several `keysafe serve` on one data directory) may share the file: SQLite's write lock
//! orders their transactions, and each writer reads the audit chain's head under it.

mod audit;
mod cluster;
mod export;
mod lifecycle;
mod reads;
mod rows;
pub(crate) mod schema;
mod writer;

use async_trait::async_trait;
use keysafe_core::store::{
    AdminStore, Applied, AuditAppendError, AuditHead, AuditKeyRecord, AuditStore, ClientRecord,
    DepositKey, DepositListing, DepositRecord, DepositStore, GrantRecord, GroupRecord, GroupStore,
    IdentityStore, ImportSummary, KekRecord, KekUsage, KeyringStore, Mutation, OrgRecord,
    RecordStream, Store, StoreError, StoreResult, StoreStats, VersionMeta, VersionRecord,
    WrappedId, WrappedKeyRecord, WrappedKind, WrappedRow,
};
use keysafe_proto::Timestamp;
use keysafe_proto::api::ClientState;
use keysafe_proto::audit::{AuditCheckpoint, AuditEntry, AuditEvent};
use keysafe_proto::{ClientFingerprint, DepositVersion, GroupName, OrgName, Principal};
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How many queued writes one transaction may take.
const MAX_BATCH: usize = 512;
const READ_CONNECTIONS: u32 = 4;

pub struct SqliteStore {
    path: PathBuf,
    readers: SqlitePool,
    writer: mpsc::Sender<writer::Job>,
    /// The audit chain's committed head, kept by the writer.
    audit_head: audit::SharedHead,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

pub(crate) fn backend_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Backend(other.to_string()),
    }
}

/// Creates the missing directories above a new database file, private to the owner.
pub(crate) fn create_parent(path: &Path) -> StoreResult<()> {
    let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    else {
        return Ok(());
    };
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(parent)
        .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", parent.display())))
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the database writer has stopped".into())
}

/// The connection settings every connection to a keysafe database uses.
pub(crate) fn options(path: &Path, create: bool) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // Freed pages are overwritten with zeros, so purged ciphertext does not linger in the file.
        .pragma("secure_delete", "ON")
        .log_statements(tracing::log::LevelFilter::Trace)
}

impl SqliteStore {
    /// Creates a new database at `path` (which must not exist; missing parent directories are
    /// created, private to the owner) and applies the migrations.
    pub async fn create(path: &Path) -> StoreResult<Self> {
        if path.exists() {
            return Err(StoreError::AlreadyExists);
        }
        create_parent(path)?;
        Self::connect(path, true).await
    }

    /// Opens an existing database and applies any pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        if !path.exists() {
            return Err(StoreError::NotFound);
        }
        Self::connect(path, false).await
    }

    async fn connect(path: &Path, create: bool) -> StoreResult<Self> {
        let mut conn = options(path, create)
            .connect()
            .await
            .map_err(backend_error)?;
        migrate(&mut conn).await?;
        let head = audit::load_head(&mut conn).await?;
        let audit_head = std::sync::Arc::new(std::sync::Mutex::new(head.clone()));
        let readers = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .min_connections(1)
            .connect_with(options(path, false).pragma("query_only", "ON"))
            .await
            .map_err(backend_error)?;
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(writer::run(conn, rx, MAX_BATCH, head, audit_head.clone()));
        Ok(Self {
            path: path.to_owned(),
            readers,
            writer: tx,
            audit_head,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability settings as a connection of this store sees them:
    /// (journal_mode, synchronous, secure_delete). Expected: ("wal", 2, 1).
    pub async fn durability_settings(&self) -> StoreResult<(String, i64, i64)> {
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&self.readers)
            .await
            .map_err(backend_error)?;
        let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&self.readers)
            .await
            .map_err(backend_error)?;
        let (sd,): (i64,) = sqlx::query_as("PRAGMA secure_delete")
            .fetch_one(&self.readers)
            .await
            .map_err(backend_error)?;
        Ok((mode, sync, sd))
    }
}

/// The embedded migrations, in order. Each file is applied once and recorded (with a
/// checksum) in `_sqlx_migrations` (see `schema`).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "sharing",
        include_str!("../../migrations/sqlite/0002_sharing.sql"),
    ),
    (
        3,
        "seals_rotation",
        include_str!("../../migrations/sqlite/0003_seals_rotation.sql"),
    ),
    (
        5,
        "audit",
        include_str!("../../migrations/sqlite/0005_audit.sql"),
    ),
    (
        6,
        "token_reissue",
        include_str!("../../migrations/sqlite/0006_token_reissue.sql"),
    ),
    (
        7,
        "cluster",
        include_str!("../../migrations/sqlite/0007_cluster.sql"),
    ),
    (
        8,
        "lifecycle",
        include_str!("../../migrations/sqlite/0008_lifecycle.sql"),
    ),
];

fn migrations() -> Vec<crate::schema::Migration> {
    MIGRATIONS
        .iter()
        .map(|&(version, name, sql)| crate::schema::Migration { version, name, sql })
        .collect()
}

/// The newest migration this binary carries.
pub(crate) fn newest_migration() -> i64 {
    crate::schema::newest(&migrations())
}

async fn migrate(conn: &mut sqlx::SqliteConnection) -> StoreResult<()> {
    schema::migrate(conn, &migrations()).await
}

#[async_trait]
impl Store for SqliteStore {
    async fn apply_audited(
        &self,
        mutation: Mutation,
        audit: Option<AuditEvent>,
    ) -> StoreResult<Applied> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(writer::Job::Mutate {
                mutation,
                audit,
                reply,
            })
            .await
            .map_err(|_| writer_stopped())?;
        rx.await.map_err(|_| writer_stopped())?
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
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
        audit::entries(&self.readers, from, since, limit).await
    }

    async fn audit_checkpoints(&self, from: u64) -> StoreResult<Vec<AuditCheckpoint>> {
        audit::checkpoints(&self.readers, from).await
    }

    fn audit_head(&self) -> AuditHead {
        self.audit_head
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    async fn audit_signing_key(&self) -> StoreResult<Option<AuditKeyRecord>> {
        audit::signing_key(&self.readers).await
    }
}

#[async_trait]
impl AdminStore for SqliteStore {
    /// The database answers, and its schema is not newer than this binary's.
    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.readers.acquire().await.map_err(backend_error)?;
        schema::check_not_newer(&mut conn).await
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        audit::stats(&self.readers).await
    }

    async fn close(&self) {
        self.readers.close().await;
    }

    async fn export(&self) -> StoreResult<RecordStream> {
        export::export(&self.path).await
    }

    async fn import(&self, records: RecordStream) -> StoreResult<ImportSummary> {
        let (summary, head) = export::import(&self.path, records).await?;
        // The writer adopts the new head under its lock at its next write; callers of
        // `audit_head` see it now.
        if let Some(head) = head
            && let Ok(mut h) = self.audit_head.lock()
            && head.seq > h.seq
        {
            *h = head;
        }
        Ok(summary)
    }
}

#[async_trait]
impl KeyringStore for SqliteStore {
    async fn load_keks(&self) -> StoreResult<Vec<KekRecord>> {
        reads::load_keks(&self.readers).await
    }

    async fn list_stale_wrapped(
        &self,
        kind: WrappedKind,
        current: u32,
        after: Option<&WrappedId>,
        limit: u32,
    ) -> StoreResult<Vec<WrappedRow>> {
        reads::list_stale_wrapped(&self.readers, kind, current, after, limit).await
    }

    async fn kek_usage(&self) -> StoreResult<Vec<KekUsage>> {
        reads::kek_usage(&self.readers).await
    }
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn get_org(&self, name: &OrgName) -> StoreResult<Option<OrgRecord>> {
        reads::get_org(&self.readers, name).await
    }

    async fn list_orgs(&self) -> StoreResult<Vec<OrgRecord>> {
        reads::list_orgs(&self.readers).await
    }

    async fn get_client(&self, fp: &ClientFingerprint) -> StoreResult<Option<ClientRecord>> {
        reads::get_client(&self.readers, fp).await
    }

    async fn list_clients(
        &self,
        org: Option<&OrgName>,
        state: Option<ClientState>,
    ) -> StoreResult<Vec<ClientRecord>> {
        reads::list_clients(&self.readers, org, state).await
    }
}

#[async_trait]
impl DepositStore for SqliteStore {
    async fn get_deposit(&self, key: &DepositKey) -> StoreResult<Option<DepositRecord>> {
        reads::get_deposit(&self.readers, key).await
    }

    async fn get_version(
        &self,
        key: &DepositKey,
        version: Option<DepositVersion>,
    ) -> StoreResult<Option<(DepositRecord, VersionRecord)>> {
        reads::get_version(&self.readers, key, version).await
    }

    async fn list_deposits(&self, q: DepositListing<'_>) -> StoreResult<Vec<DepositRecord>> {
        reads::list_deposits(&self.readers, q).await
    }

    async fn list_versions(&self, key: &DepositKey) -> StoreResult<Vec<VersionMeta>> {
        reads::list_versions(&self.readers, key).await
    }

    async fn get_grants(&self, key: &DepositKey) -> StoreResult<Vec<GrantRecord>> {
        reads::get_grants(&self.readers, key).await
    }

    async fn list_shared(
        &self,
        grantees: &[Principal],
    ) -> StoreResult<Vec<(DepositRecord, GrantRecord)>> {
        reads::list_shared(&self.readers, grantees).await
    }
}

#[async_trait]
impl GroupStore for SqliteStore {
    async fn get_group(&self, org: &OrgName, name: &GroupName) -> StoreResult<Option<GroupRecord>> {
        reads::get_group(&self.readers, org, name).await
    }

    async fn list_groups(
        &self,
        org: Option<&OrgName>,
        member: Option<&ClientFingerprint>,
    ) -> StoreResult<Vec<GroupRecord>> {
        reads::list_groups(&self.readers, org, member).await
    }

    async fn group_keys(
        &self,
        org: &OrgName,
        name: &GroupName,
        member: &ClientFingerprint,
    ) -> StoreResult<Vec<WrappedKeyRecord>> {
        reads::group_keys(&self.readers, org, name, member).await
    }

    async fn member_groups(
        &self,
        org: &OrgName,
        member: &ClientFingerprint,
    ) -> StoreResult<Vec<GroupName>> {
        reads::member_groups(&self.readers, org, member).await
    }
}
