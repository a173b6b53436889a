//! SQLite schema migrations (`migrations/sqlite/`), applied at open under `crate::schema`'s
//! rule. Applied migrations are recorded in `_sqlx_migrations`, the table (and SHA-384
//! checksums) sqlx's migrator used before, so databases it created open unchanged. Unlike that
//! migrator, every pending migration is applied in one `BEGIN IMMEDIATE` transaction that
//! re-reads what is applied under SQLite's write lock: two processes opening one file at once
//! do not both apply a migration, and a failed migration leaves nothing behind.

use super::conn::{all, backend_error, one};
use super::rows::at;
use crate::schema::{self, Migration};
use keysafe_core::store::StoreResult;
use rusqlite::{Connection, params};

/// The table sqlx's migrator created; kept so that existing databases need nothing.
const TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (\
    version BIGINT PRIMARY KEY, \
    description TEXT NOT NULL, \
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
    success BOOLEAN NOT NULL, \
    checksum BLOB NOT NULL, \
    execution_time BIGINT NOT NULL)";

/// An applied migration: its version and the checksum of the SQL it ran.
type Applied = (i64, Vec<u8>);

fn checksum(sql: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, sql.as_bytes())
        .as_ref()
        .to_vec()
}

/// The recorded migrations (`None` when none were ever applied), refusing a database where one
/// did not finish (sqlx recorded such a migration with `success = false`).
fn applied(conn: &Connection) -> StoreResult<Option<Vec<Applied>>> {
    let exists = one(
        conn,
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        [],
        |_| Ok(()),
    )?;
    if exists.is_none() {
        return Ok(None);
    }
    let rows = all(
        conn,
        "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
        [],
        |r| Ok((at::<i64>(r, 0)?, at::<Vec<u8>>(r, 1)?, at::<bool>(r, 2)?)),
    )?;
    if let Some((v, _, _)) = rows.iter().find(|(_, _, ok)| !ok) {
        return Err(keysafe_core::store::StoreError::Corrupt(format!(
            "schema migration {v} was started and never finished; restore the database from \
             a backup"
        )));
    }
    Ok(Some(rows.into_iter().map(|(v, c, _)| (v, c)).collect()))
}

/// Brings the schema up to date (see the module documentation). Blocking: run it off the
/// async workers.
pub(crate) fn migrate(conn: &Connection, migrations: &[Migration]) -> StoreResult<()> {
    // Fast path, without the write lock: up to date (or too new, refused right here).
    if let Some(done) = applied(conn)?
        && !schema::check(&done, migrations, checksum)?
    {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(backend_error)?;
    let r = apply_pending(conn, migrations);
    let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.execute_batch(end).map_err(backend_error);
    r.and(ended)
}

fn apply_pending(conn: &Connection, migrations: &[Migration]) -> StoreResult<()> {
    conn.execute_batch(TABLE_DDL).map_err(backend_error)?;
    // Again under the lock: another process may have applied them meanwhile.
    let done = applied(conn)?.unwrap_or_default();
    schema::check(&done, migrations, checksum)?;
    let mut pending: Vec<&Migration> = migrations
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
        let started = std::time::Instant::now();
        conn.execute_batch(m.sql).map_err(backend_error)?;
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (?1, ?2, TRUE, ?3, ?4)",
            params![
                m.version,
                m.name,
                checksum(m.sql),
                i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX)
            ],
        )
        .map_err(backend_error)?;
    }
    Ok(())
}

/// The newest migration the database has applied, read on `conn` (inside the writer's
/// transaction, so under the write lock; or by `ping`).
pub(crate) fn database_version(conn: &Connection) -> StoreResult<Option<i64>> {
    Ok(
        one(conn, "SELECT max(version) FROM _sqlx_migrations", [], |r| {
            at::<Option<i64>>(r, 0)
        })?
        .flatten(),
    )
}

/// Refuses to go on when the database's schema moved past this binary's.
pub(crate) fn check_not_newer(conn: &Connection) -> StoreResult<()> {
    schema::not_newer(database_version(conn)?, super::newest_migration())
}
