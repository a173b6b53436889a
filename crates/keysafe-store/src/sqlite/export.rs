//! Export and import on SQLite, generic over [`RECORD_KINDS`]: each kind is the table of its
//! name, each field the column of its name (booleans are 0/1 integers).
//!
//! The export reads one snapshot: a connection of its own opens a read transaction (WAL keeps
//! it consistent while the store's writer goes on committing), and a task streams each table in
//! key order through sqlx's bounded row channel. The import takes the write lock
//! (`BEGIN IMMEDIATE`) on a connection of its own, checks that every table is empty, inserts in
//! multi-row statements, and commits only after the stream ended cleanly.

use super::{backend_error, options};
use crate::transfer::{self, Batch, ChainEnd, Producer};
use futures_util::TryStreamExt;
use keysafe_core::store::export::{ExportRecord, FieldType, RECORD_KINDS, RecordKind, Value};
use keysafe_core::store::{AuditHead, ImportSummary, RecordStream, StoreError, StoreResult};
use sqlx::sqlite::SqliteRow;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use std::path::Path;

/// Starts an export of the database at `path`; returns once its snapshot is taken.
pub(crate) async fn export(path: &Path) -> StoreResult<RecordStream> {
    let mut conn = options(path, false)
        .pragma("query_only", "ON")
        .connect()
        .await
        .map_err(backend_error)?;
    // A deferred transaction's snapshot is taken by its first read.
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .map_err(backend_error)?;
    sqlx::query("SELECT count(*) FROM sqlite_master")
        .fetch_one(&mut conn)
        .await
        .map_err(backend_error)?;
    let (producer, stream) = transfer::channel();
    tokio::spawn(async move {
        match stream_all(&mut conn, &producer).await {
            Ok(true) => producer.done().await,
            Ok(false) => {}
            Err(e) => producer.fail(e).await,
        }
        let _ = conn.close().await;
    });
    Ok(stream)
}

/// Sends every record; `Ok(false)` when the consumer went away.
async fn stream_all(conn: &mut SqliteConnection, out: &Producer) -> StoreResult<bool> {
    for kind in RECORD_KINDS {
        let sql = transfer::select_all(kind);
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await.map_err(backend_error)? {
            if !out.send(record(kind, &row)?).await {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn record(kind: &'static RecordKind, row: &SqliteRow) -> StoreResult<ExportRecord> {
    let corrupt = |f: &str, e: sqlx::Error| StoreError::Corrupt(format!("{}.{f}: {e}", kind.name));
    let mut values = Vec::with_capacity(kind.fields.len());
    for (i, f) in kind.fields.iter().enumerate() {
        let v = match f.ty {
            FieldType::Int => row
                .try_get::<Option<i64>, _>(i)
                .map_err(|e| corrupt(f.name, e))?
                .map(Value::Int),
            FieldType::Bool => match row
                .try_get::<Option<i64>, _>(i)
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
                .try_get::<Option<String>, _>(i)
                .map_err(|e| corrupt(f.name, e))?
                .map(Value::Text),
            FieldType::Bytes => row
                .try_get::<Option<Vec<u8>>, _>(i)
                .map_err(|e| corrupt(f.name, e))?
                .map(Value::Bytes),
        };
        values.push(v.unwrap_or(Value::Null));
    }
    ExportRecord::new(kind, values)
}

/// Imports `records` into the (empty) database at `path`, all or nothing. Returns what was
/// written and the audit chain's new head, if entries were imported.
pub(crate) async fn import(
    path: &Path,
    mut records: RecordStream,
) -> StoreResult<(ImportSummary, Option<AuditHead>)> {
    let mut conn = options(path, false)
        .connect()
        .await
        .map_err(backend_error)?;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .map_err(backend_error)?;
    let written = write_all(&mut conn, &mut records).await;
    let outcome = match written {
        Ok(r) => sqlx::query("COMMIT")
            .execute(&mut conn)
            .await
            .map(|_| r)
            .map_err(backend_error),
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            Err(e)
        }
    };
    let _ = conn.close().await;
    outcome
}

async fn write_all(
    conn: &mut SqliteConnection,
    records: &mut RecordStream,
) -> StoreResult<(ImportSummary, Option<AuditHead>)> {
    let first: Option<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(transfer::first_non_empty()))
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend_error)?;
    if let Some(kind) = first {
        return Err(transfer::not_empty(&kind));
    }
    let mut summary = ImportSummary::new();
    let mut chain = ChainEnd::default();
    let mut batch = Batch::default();
    while let Some(r) = transfer::next(records).await? {
        summary.add(r.kind());
        chain.see(&r);
        if batch.must_flush_before(&r) {
            flush(conn, &mut batch).await?;
        }
        batch.push(r);
    }
    flush(conn, &mut batch).await?;
    Ok((summary, chain.head()?))
}

async fn flush(conn: &mut SqliteConnection, batch: &mut Batch) -> StoreResult<()> {
    let Some((kind, rows)) = batch.take() else {
        return Ok(());
    };
    let one = format!("({})", vec!["?"; kind.fields.len()].join(", "));
    let sql = format!(
        "INSERT INTO {} VALUES {}",
        transfer::column_list(kind),
        vec![one; rows.len()].join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for r in rows {
        for v in r.into_values() {
            q = match v {
                Value::Null => q.bind(None::<i64>),
                Value::Int(i) => q.bind(i),
                Value::Bool(b) => q.bind(i64::from(b)),
                Value::Text(t) => q.bind(t),
                Value::Bytes(b) => q.bind(b),
            };
        }
    }
    q.execute(&mut *conn).await.map_err(|e| match e {
        sqlx::Error::Database(d) => StoreError::Corrupt(format!(
            "the database refused a {} record: {}",
            kind.name,
            d.message()
        )),
        other => backend_error(other),
    })?;
    Ok(())
}
