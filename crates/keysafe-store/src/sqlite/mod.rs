//! The SQLite store: one file in WAL mode with `synchronous=FULL`, so an acknowledged write
//! survives power loss. Reads borrow a query-only connection from a small pool (`conn.rs`): point
//! reads run on the calling thread, reads that grow with the data on the blocking pool. Every
//! write goes through one writer thread that commits whatever has queued up in a single
//! transaction (group commit), one fsync for many writes, each write isolated by a savepoint.
//! Several processes (several `keysafe serve` on one data directory) may share the file:
//! SQLite's write lock orders their transactions, and each writer reads the audit chain's head
//! under it. Everything goes through SQLite's own API (rusqlite): the migrations (recorded in
//! the table sqlx's migrator kept, see `schema`), the export's snapshot read and the import.

mod audit;
mod cluster;
pub(crate) mod conn;
mod export;
mod lifecycle;
mod reads;
pub(crate) mod row_cache;
mod rows;
pub(crate) mod schema;
mod writer;

use async_trait::async_trait;
use conn::Readers;
use keysafe_core::store::{
    AdminStore, Applied, AuditAppendError, AuditHead, AuditKeyRecord, AuditStore, ClientRecord,
    DepositKey, DepositListing, DepositRecord, DepositStore, GrantRecord, GroupRecord, GroupStore,
    IdentityStore, ImportSummary, KekRecord, KekUsage, KeyringStore, Mutation, OrgRecord, Queued,
    RecordStream, Store, StoreError, StoreResult, StoreStats, VersionMeta, VersionRow, WrappedId,
    WrappedKeyRecord, WrappedKind, WrappedRow, version_row,
};
use keysafe_proto::Timestamp;
use keysafe_proto::api::ClientState;
use keysafe_proto::audit::{AuditCheckpoint, AuditEntry, AuditEvent};
use keysafe_proto::{ClientFingerprint, DepositVersion, GroupName, OrgName, Principal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// How many queued writes one transaction may take.
const MAX_BATCH: usize = 512;

pub struct SqliteStore {
    path: PathBuf,
    readers: Arc<Readers>,
    writer: mpsc::Sender<writer::Job>,
    /// The audit chain's committed head, kept by the writer.
    audit_head: audit::SharedHead,
    row_auth: keysafe_core::store::RowAuthSlot,
    /// Current deposit versions as last read, with the change epoch that keeps them coherent
    /// with every other process on the file.
    rows: Arc<row_cache::RowCache>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
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
        let owned = path.to_owned();
        // Opening, migrating and reading the chain's head wait on the disk and on other
        // processes' write locks: off the async workers.
        let (write_conn, head, readers) = tokio::task::spawn_blocking(move || {
            let conn = conn::open_with(&owned, false, create)?;
            schema::migrate(&conn, &migrations())?;
            let head = audit::load_head(&conn)?;
            let readers = Readers::open(&owned)?;
            StoreResult::Ok((conn, head, readers))
        })
        .await
        .map_err(|e| StoreError::Backend(format!("opening the database: {e}")))??;
        let audit_head = Arc::new(std::sync::Mutex::new(head.clone()));
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let shared = audit_head.clone();
        let row_auth = keysafe_core::store::RowAuthSlot::default();
        let auth = row_auth.clone();
        // Without the epoch this process could neither keep a cache coherent nor announce its
        // own writes to the other processes' caches, so the store does not open.
        let rows = row_cache::RowCache::open(path, row_cache::CAPACITY_BYTES)
            .map(Arc::new)
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot open the deposit change epoch {}: {e}",
                    row_cache::signal_path(path).display()
                ))
            })?;
        let writer_rows = rows.clone();
        std::thread::Builder::new()
            .name("keysafe-sqlite-writer".into())
            .spawn(move || {
                writer::run(write_conn, rx, MAX_BATCH, head, shared, auth, writer_rows);
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the database writer: {e}")))?;
        Ok(Self {
            path: path.to_owned(),
            readers,
            writer: tx,
            audit_head,
            row_auth,
            rows,
        })
    }

    /// How many deposit versions the cache holds now.
    pub fn cached_versions(&self) -> usize {
        self.rows.len()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability settings as a connection of this store sees them:
    /// (journal_mode, synchronous, secure_delete). Expected: ("wal", 2, 1).
    pub async fn durability_settings(&self) -> StoreResult<(String, i64, i64)> {
        self.readers.run(|c| {
            let q = |sql: &str| c.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0));
            let mode = match q("PRAGMA journal_mode").map_err(conn::backend_error)? {
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            };
            let int = |sql: &str| -> StoreResult<i64> {
                c.query_row(sql, [], |r| r.get::<_, i64>(0))
                    .map_err(conn::backend_error)
            };
            Ok((
                mode,
                int("PRAGMA synchronous")?,
                int("PRAGMA secure_delete")?,
            ))
        })
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
    (
        9,
        "row_macs",
        include_str!("../../migrations/sqlite/0009_row_macs.sql"),
    ),
    (
        10,
        "audit_without_time_index",
        include_str!("../../migrations/sqlite/0010_audit_without_time_index.sql"),
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

#[async_trait]
impl Store for SqliteStore {
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
        self.readers
            .run_blocking(move |c| audit::entries(c, from, since, limit))
            .await
    }

    async fn audit_checkpoints(&self, from: u64) -> StoreResult<Vec<AuditCheckpoint>> {
        self.readers
            .run_blocking(move |c| audit::checkpoints(c, from))
            .await
    }

    fn audit_head(&self) -> AuditHead {
        self.audit_head
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    async fn audit_signing_key(&self) -> StoreResult<Option<AuditKeyRecord>> {
        self.readers.run(audit::signing_key)
    }
}

#[async_trait]
impl AdminStore for SqliteStore {
    /// The database answers, and its schema is not newer than this binary's.
    async fn ping(&self) -> StoreResult<()> {
        self.readers.run(schema::check_not_newer)
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        let mut stats = self.readers.run_blocking(audit::stats).await?;
        let (size, idle) = self.readers.counts();
        stats.pool_size = u32::try_from(size).unwrap_or(u32::MAX);
        stats.pool_idle = u32::try_from(idle).unwrap_or(u32::MAX);
        Ok(stats)
    }

    async fn close(&self) {
        self.readers.close();
    }

    async fn export(&self) -> StoreResult<RecordStream> {
        export::export(&self.path).await
    }

    async fn import(&self, records: RecordStream) -> StoreResult<ImportSummary> {
        let imported = export::import(&self.path, records).await;
        // Whether it committed or not: an import writes deposits around the writer.
        self.rows.changed();
        let (summary, head) = imported?;
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

    fn row_auth(&self) -> &keysafe_core::store::RowAuthSlot {
        &self.row_auth
    }
}

#[async_trait]
impl KeyringStore for SqliteStore {
    async fn load_keks(&self) -> StoreResult<Vec<KekRecord>> {
        self.readers.run(reads::load_keks)
    }

    async fn list_stale_wrapped(
        &self,
        kind: WrappedKind,
        current: u32,
        after: Option<&WrappedId>,
        limit: u32,
    ) -> StoreResult<Vec<WrappedRow>> {
        let after = after.cloned();
        self.readers
            .run_blocking(move |c| {
                reads::list_stale_wrapped(c, kind, current, after.as_ref(), limit)
            })
            .await
    }

    async fn kek_usage(&self) -> StoreResult<Vec<KekUsage>> {
        self.readers.run_blocking(reads::kek_usage).await
    }
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn get_org(&self, name: &OrgName) -> StoreResult<Option<OrgRecord>> {
        self.readers.run(|c| reads::get_org(c, name))
    }

    async fn list_orgs(&self) -> StoreResult<Vec<OrgRecord>> {
        self.readers.run_blocking(reads::list_orgs).await
    }

    async fn get_client(&self, fp: &ClientFingerprint) -> StoreResult<Option<ClientRecord>> {
        self.readers.run(|c| reads::get_client(c, fp))
    }

    async fn list_clients(
        &self,
        org: Option<&OrgName>,
        state: Option<ClientState>,
    ) -> StoreResult<Vec<ClientRecord>> {
        let org = org.map(|o| o.as_str().to_owned());
        self.readers
            .run_blocking(move |c| reads::list_clients(c, org.as_deref(), reads::state_str(state)))
            .await
    }
}

#[async_trait]
impl DepositStore for SqliteStore {
    async fn get_deposit(&self, key: &DepositKey) -> StoreResult<Option<DepositRecord>> {
        // The header of a cached current version is the header as stored (the put's read
        // before it writes; this process's writer keeps the deposits it wrote cached).
        if let Some(row) = self.rows.get(key) {
            return Ok(Some(row.0.clone()));
        }
        self.readers.run(|c| reads::get_deposit(c, key))
    }

    async fn get_version(
        &self,
        key: &DepositKey,
        version: Option<DepositVersion>,
    ) -> StoreResult<Option<VersionRow>> {
        // The current version is the hot read; a named one goes to the file.
        if version.is_some() {
            let row = self.readers.run(|c| reads::get_version(c, key, version))?;
            return Ok(row.map(|(d, v)| version_row(d, v)));
        }
        if let Some(row) = self.rows.get(key) {
            return Ok(Some(row));
        }
        let before = self.rows.epoch();
        let row = self
            .readers
            .run(|c| reads::get_version(c, key, None))?
            .map(|(d, v)| version_row(d, v));
        if let Some(row) = &row {
            self.rows.fill(key, before, row.clone());
        }
        Ok(row)
    }

    async fn list_deposits(&self, q: DepositListing<'_>) -> StoreResult<Vec<DepositRecord>> {
        let q = reads::Listing {
            owner: q.owner.stored(),
            prefix: q.prefix.to_owned(),
            after: q.after.map(str::to_owned),
            limit: q.limit,
            include_deleted: q.include_deleted,
        };
        self.readers
            .run_blocking(move |c| reads::list_deposits(c, &q))
            .await
    }

    async fn list_versions(&self, key: &DepositKey) -> StoreResult<Vec<VersionMeta>> {
        let (owner, name) = (key.owner.stored(), key.name.as_str().to_owned());
        self.readers
            .run_blocking(move |c| reads::list_versions(c, &owner, &name))
            .await
    }

    async fn get_grants(&self, key: &DepositKey) -> StoreResult<Vec<GrantRecord>> {
        self.readers.run(|c| reads::get_grants(c, key))
    }

    async fn list_shared(
        &self,
        grantees: &[Principal],
    ) -> StoreResult<Vec<(DepositRecord, GrantRecord)>> {
        let grantees = reads::stored(grantees);
        self.readers
            .run_blocking(move |c| reads::list_shared(c, &grantees))
            .await
    }

    fn forget_cached_rows(&self) {
        self.rows.forget();
    }
}

#[async_trait]
impl GroupStore for SqliteStore {
    async fn get_group(&self, org: &OrgName, name: &GroupName) -> StoreResult<Option<GroupRecord>> {
        self.readers.run(|c| reads::get_group(c, org, name))
    }

    async fn list_groups(
        &self,
        org: Option<&OrgName>,
        member: Option<&ClientFingerprint>,
    ) -> StoreResult<Vec<GroupRecord>> {
        let org = org.map(|o| o.as_str().to_owned());
        let member = member.map(|m| m.as_str().to_owned());
        self.readers
            .run_blocking(move |c| reads::list_groups(c, org.as_deref(), member.as_deref()))
            .await
    }

    async fn group_keys(
        &self,
        org: &OrgName,
        name: &GroupName,
        member: &ClientFingerprint,
    ) -> StoreResult<Vec<WrappedKeyRecord>> {
        self.readers
            .run(|c| reads::group_keys(c, org, name, member))
    }

    async fn member_groups(
        &self,
        org: &OrgName,
        member: &ClientFingerprint,
    ) -> StoreResult<Vec<keysafe_core::store::MemberGroup>> {
        self.readers.run(|c| reads::member_groups(c, org, member))
    }
}
