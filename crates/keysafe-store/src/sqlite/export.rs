//! Export and import on SQLite, generic over [`RECORD_KINDS`]: each kind is the table of its
//! name, each field the column of its name (booleans are 0/1 integers).
//!
//! The export reads one snapshot: a query-only connection of its own opens a read transaction
//! (WAL keeps it consistent while the store's writer goes on committing), and a thread of the
//! blocking pool walks each table in key order, handing records to the bounded channel (so it
//! reads only as fast as the consumer takes them, and never on an async worker). The import
//! takes the write lock (`BEGIN IMMEDIATE`) on a connection of its own, checks that every table
//! is empty, inserts in multi-row statements, each on the blocking pool, and commits only after
//! the stream ended cleanly.

use super::conn::{self, backend_error, one};
use crate::transfer::{self, Batch, ChainEnd, Producer};
use keysafe_core::store::export::{ExportRecord, FieldType, RECORD_KINDS, RecordKind, Value};
use keysafe_core::store::{AuditHead, ImportSummary, RecordStream, StoreError, StoreResult};
use rusqlite::types::ToSql;
use rusqlite::{Connection, Row};
use std::path::{Path, PathBuf};
use tokio::sync::oneshot;

fn task_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Backend(format!("a database task failed: {e}"))
}

/// Starts an export of the database at `path`; returns once its snapshot is taken.
pub(crate) async fn export(path: &Path) -> StoreResult<RecordStream> {
    let path: PathBuf = path.to_owned();
    let (producer, stream) = transfer::channel();
    let (ready, snapshot_taken) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let conn = match begin_snapshot(&path) {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        if ready.send(Ok(())).is_err() {
            return;
        }
        match stream_all(&conn, &producer) {
            Ok(true) => producer.blocking_done(),
            Ok(false) => {}
            Err(e) => producer.blocking_fail(e),
        }
        // Dropping the connection ends its read transaction.
    });
    snapshot_taken
        .await
        .map_err(|_| StoreError::Backend("the export task stopped".into()))??;
    Ok(stream)
}

/// A query-only connection inside a read transaction whose snapshot is taken.
fn begin_snapshot(path: &Path) -> StoreResult<Connection> {
    let conn = conn::open(path, true)?;
    // A deferred transaction's snapshot is taken by its first read.
    conn.execute_batch("BEGIN").map_err(backend_error)?;
    one(&conn, "SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    Ok(conn)
}

/// Sends every record; `Ok(false)` when the consumer went away.
fn stream_all(conn: &Connection, out: &Producer) -> StoreResult<bool> {
    for kind in RECORD_KINDS {
        let sql = transfer::select_all(kind);
        let mut st = conn.prepare(&sql).map_err(backend_error)?;
        let mut rows = st.query([]).map_err(backend_error)?;
        while let Some(row) = rows.next().map_err(backend_error)? {
            if !out.blocking_send(record(kind, row)?) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn record(kind: &'static RecordKind, row: &Row<'_>) -> StoreResult<ExportRecord> {
    let corrupt =
        |f: &str, e: rusqlite::Error| StoreError::Corrupt(format!("{}.{f}: {e}", kind.name));
    let mut values = Vec::with_capacity(kind.fields.len());
    for (i, f) in kind.fields.iter().enumerate() {
        let v = match f.ty {
            FieldType::Int => row
                .get::<_, Option<i64>>(i)
                .map_err(|e| corrupt(f.name, e))?
                .map(Value::Int),
            FieldType::Bool => match row
                .get::<_, Option<i64>>(i)
                .map_err(|e| corrupt(f.name, e))?
            {
                None => None,
                Some(0) => Some(Value::Bool(false)),
                Some(1) => Some(Value::Bool(true)),
                Some(_) => {
                    return Err(StoreError::Corrupt(format!(
                        "{}.{}: not a boolean",
                        kind.name, f.name
                    )));
                }
            },
            FieldType::Text => row
                .get::<_, Option<String>>(i)
                .map_err(|e| corrupt(f.name, e))?
                .map(Value::Text),
            FieldType::Bytes => row
                .get::<_, Option<Vec<u8>>>(i)
                .map_err(|e| corrupt(f.name, e))?
                .map(Value::Bytes),
        };
        values.push(v.unwrap_or(Value::Null));
    }
    ExportRecord::new(kind, values)
}

/// Runs `f` with the import's connection on the blocking pool and hands the connection back.
/// A task that failed outright takes the connection (and with it the open transaction, rolled
/// back as it closes) with it.
async fn blocking<T: Send + 'static>(
    conn: Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
) -> StoreResult<(Connection, T)> {
    tokio::task::spawn_blocking(move || {
        let r = f(&conn);
        r.map(|v| (conn, v))
    })
    .await
    .map_err(task_failed)?
}

/// Imports `records` into the (empty) database at `path`, all or nothing. Returns what was
/// written and the audit chain's new head, if entries were imported.
pub(crate) async fn import(
    path: &Path,
    mut records: RecordStream,
) -> StoreResult<(ImportSummary, Option<AuditHead>)> {
    let path = path.to_owned();
    let conn = tokio::task::spawn_blocking(move || {
        let conn = conn::open(&path, false)?;
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(backend_error)?;
        StoreResult::Ok(conn)
    })
    .await
    .map_err(task_failed)??;
    // Any error below drops the connection inside its transaction: SQLite rolls it back as the
    // connection closes (discarding uncommitted pages, no disk wait), and nothing was written.
    let (conn, ()) = blocking(conn, |c| {
        let first = one(c, &transfer::first_non_empty(), [], |r| {
            crate::sqlite::rows::at::<String>(r, 0)
        })?;
        match first {
            Some(kind) => Err(transfer::not_empty(&kind)),
            None => Ok(()),
        }
    })
    .await?;
    let mut conn = conn;
    let mut summary = ImportSummary::new();
    let mut chain = ChainEnd::default();
    let mut batch = Batch::default();
    while let Some(r) = transfer::next(&mut records).await? {
        summary.add(r.kind());
        chain.see(&r);
        if batch.must_flush_before(&r) {
            conn = flush(conn, &mut batch).await?;
        }
        batch.push(r);
    }
    conn = flush(conn, &mut batch).await?;
    // The commit's fsync, and closing the connection, on the blocking pool too.
    tokio::task::spawn_blocking(move || conn.execute_batch("COMMIT").map_err(backend_error))
        .await
        .map_err(task_failed)??;
    Ok((summary, chain.head()?))
}

async fn flush(conn: Connection, batch: &mut Batch) -> StoreResult<Connection> {
    let Some((kind, rows)) = batch.take() else {
        return Ok(conn);
    };
    let (conn, ()) = blocking(conn, move |c| insert(c, kind, rows)).await?;
    Ok(conn)
}

/// One multi-row INSERT of `rows` (all of `kind`).
fn insert(
    conn: &Connection,
    kind: &'static RecordKind,
    rows: Vec<ExportRecord>,
) -> StoreResult<()> {
    let one_row = format!("({})", vec!["?"; kind.fields.len()].join(", "));
    let sql = format!(
        "INSERT INTO {} VALUES {}",
        transfer::column_list(kind),
        vec![one_row; rows.len()].join(", ")
    );
    let values: Vec<Value> = rows
        .into_iter()
        .flat_map(ExportRecord::into_values)
        .collect();
    let params: Vec<&dyn ToSql> = values.iter().map(value_sql).collect();
    conn.execute(&sql, params.as_slice()).map_err(|e| match e {
        rusqlite::Error::SqliteFailure(_, msg) => StoreError::Corrupt(format!(
            "the database refused a {} record: {}",
            kind.name,
            msg.unwrap_or_default()
        )),
        other => backend_error(other),
    })?;
    Ok(())
}

const NULL: Option<i64> = None;

fn value_sql(v: &Value) -> &dyn ToSql {
    match v {
        Value::Null => &NULL,
        Value::Int(i) => i,
        Value::Bool(b) => b,
        Value::Text(t) => t,
        Value::Bytes(b) => b,
    }
}
