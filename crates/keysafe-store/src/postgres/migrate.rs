//! The PostgreSQL schema migrations (`migrations/postgres/`), applied at open. Applied versions
//! are recorded with a SHA-256 of their SQL in `keysafe_migrations`. Applying happens in one
//! transaction under a transaction-scoped advisory lock, so two nodes starting at once do not
//! race: the second waits, then finds the work done. A database that is already up to date is
//! only read (no lock, no write), so a node can open a read-only standby. The rule for
//! migrations this binary does not know is `crate::schema`'s. Applying also locks the audit
//! chain's head row, which every write transaction locks first: a write of any node commits
//! before the migration or sees it (and then refuses, when the node is older).

use super::errors::store_error;
use crate::schema::{self, Migration};
use keysafe_core::store::{StoreError, StoreResult};
use keysafe_proto::audit::GENESIS_HASH;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "token_reissue",
        sql: include_str!("../../migrations/postgres/0002_token_reissue.sql"),
    },
    Migration {
        version: 3,
        name: "cluster",
        sql: include_str!("../../migrations/postgres/0003_cluster.sql"),
    },
    Migration {
        version: 4,
        name: "lifecycle",
        sql: include_str!("../../migrations/postgres/0004_lifecycle.sql"),
    },
    Migration {
        version: 5,
        name: "row_macs",
        sql: include_str!("../../migrations/postgres/0005_row_macs.sql"),
    },
];

/// The advisory lock key of migrations ("keysafe" and a 1 in ASCII).
const LOCK_KEY: i64 = 0x6b65_7973_6166_6501;

/// Whether the caller expects an empty database (`init`) or an initialised one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    Empty,
    Initialised,
}

fn checksum(sql: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        sql.as_bytes(),
    ))
}

/// The recorded migrations, or `None` when the table does not exist.
async fn applied(
    client: &impl tokio_postgres::GenericClient,
) -> StoreResult<Option<Vec<(i64, String)>>> {
    let exists: bool = client
        .query_one("SELECT to_regclass('keysafe_migrations') IS NOT NULL", &[])
        .await
        .map_err(store_error)?
        .try_get(0)
        .map_err(store_error)?;
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT version, checksum FROM keysafe_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(store_error)?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(store_error)?,
                r.try_get(1).map_err(store_error)?,
            ))
        })
        .collect::<StoreResult<Vec<_>>>()
        .map(Some)
}

/// Checks the recorded migrations against the embedded ones (`crate::schema`'s rule).
/// Answers whether some embedded migration is still to apply.
fn check(applied: &[(i64, String)]) -> StoreResult<bool> {
    schema::check(applied, MIGRATIONS, checksum)
}

/// The newest migration the database has applied, read in `tx` (the writer's transaction,
/// after the audit head lock; or by `ping`).
pub(crate) async fn database_version(
    client: &impl tokio_postgres::GenericClient,
) -> StoreResult<Option<i64>> {
    client
        .query_one("SELECT max(version) FROM keysafe_migrations", &[])
        .await
        .map_err(store_error)?
        .try_get(0)
        .map_err(store_error)
}

/// Refuses to go on when the database's schema moved past this binary's.
pub(crate) async fn check_not_newer(
    client: &impl tokio_postgres::GenericClient,
) -> StoreResult<()> {
    schema::not_newer(database_version(client).await?, schema::newest(MIGRATIONS))
}

/// Brings the schema up to date. `Expect::Empty` refuses a database keysafe already
/// initialised (`AlreadyExists`); `Expect::Initialised` refuses one it never initialised
/// (`NotFound`).
pub(crate) async fn run(client: &mut tokio_postgres::Client, expect: Expect) -> StoreResult<()> {
    // Fast path, without lock or write: already initialised and up to date.
    if let Some(done) = applied(client).await?
        && !done.is_empty()
    {
        if expect == Expect::Empty {
            return Err(StoreError::AlreadyExists);
        }
        if !check(&done)? {
            return Ok(());
        }
    }
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(store_error)?;
    tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(store_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS keysafe_migrations (\
            version    BIGINT PRIMARY KEY, \
            name       TEXT   NOT NULL, \
            checksum   TEXT   NOT NULL, \
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .map_err(store_error)?;
    // Every write transaction locks the audit head first: holding it, no write of another
    // node runs while the schema changes, and each one after sees the new schema.
    if tx
        .query_one("SELECT to_regclass('audit_head') IS NOT NULL", &[])
        .await
        .map_err(store_error)?
        .try_get::<_, bool>(0)
        .map_err(store_error)?
    {
        tx.query("SELECT seq FROM audit_head FOR UPDATE", &[])
            .await
            .map_err(store_error)?;
    }
    // Read again under the lock: another node may have finished meanwhile.
    let done = applied(&tx).await?.unwrap_or_default();
    match (expect, done.is_empty()) {
        (Expect::Empty, false) => return Err(StoreError::AlreadyExists),
        (Expect::Initialised, true) => return Err(StoreError::NotFound),
        _ => {}
    }
    check(&done)?;
    let mut pending: Vec<&Migration> = MIGRATIONS
        .iter()
        .filter(|m| !done.iter().any(|(v, _)| *v == m.version))
        .collect();
    pending.sort_by_key(|m| m.version);
    for m in pending {
        tracing::info!(
            version = m.version,
            name = m.name,
            "applying schema migration"
        );
        tx.batch_execute(m.sql).await.map_err(store_error)?;
        tx.execute(
            "INSERT INTO keysafe_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await
        .map_err(store_error)?;
    }
    // The chain starts at the genesis head; the constant has one home (keysafe-proto).
    tx.execute(
        "INSERT INTO audit_head (id, seq, hash) VALUES (TRUE, 0, $1) ON CONFLICT (id) DO NOTHING",
        &[&GENESIS_HASH],
    )
    .await
    .map_err(store_error)?;
    tx.commit().await.map_err(store_error)
}
