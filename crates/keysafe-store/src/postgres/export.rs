//! Export and import on PostgreSQL, generic over [`RECORD_KINDS`]: each kind is the table of
//! its name, each field the column of its name.
//!
//! The export holds one pooled connection in a `REPEATABLE READ READ ONLY` transaction (one
//! snapshot for every table) and streams each table in key order; tokio-postgres stops reading
//! the socket while the consumer lags, so memory stays flat. The import runs in one transaction
//! that first takes the audit chain's head row (as every keysafe writer does) and locks every
//! table against writes, checks that they are empty, inserts in batches (one `UNNEST` statement
//! per batch), moves `audit_head` to the last imported entry, and commits only after the
//! stream ended cleanly.

use super::errors::{pool_error, store_error};
use crate::transfer::{self, Batch, ChainEnd, Producer};
use deadpool_postgres::Pool;
use futures_util::TryStreamExt;
use keysafe_core::store::export::{ExportRecord, FieldType, RECORD_KINDS, RecordKind, Value};
use keysafe_core::store::{AuditHead, ImportSummary, RecordStream, StoreError, StoreResult};
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Starts an export; returns once its snapshot is taken.
pub(crate) async fn export(pool: &Pool) -> StoreResult<RecordStream> {
    let mut conn = pool.get().await.map_err(pool_error)?;
    let (producer, stream) = transfer::channel();
    let (ready, started) = oneshot::channel::<StoreResult<()>>();
    tokio::spawn(async move {
        let begun = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await;
        let tx = match begun {
            Ok(tx) => tx,
            Err(e) => {
                let _ = ready.send(Err(store_error(e)));
                return;
            }
        };
        // The snapshot of a REPEATABLE READ transaction is taken by its first statement.
        if let Err(e) = tx.simple_query("SELECT 1").await {
            let _ = ready.send(Err(store_error(e)));
            return;
        }
        if ready.send(Ok(())).is_err() {
            return;
        }
        match stream_all(&tx, &producer).await {
            Ok(true) => producer.done().await,
            Ok(false) => {}
            Err(e) => producer.fail(e).await,
        }
        // Dropping the read-only transaction rolls it back.
    });
    started
        .await
        .map_err(|_| StoreError::Unavailable("the export did not start".into()))??;
    Ok(stream)
}

/// Sends every record; `Ok(false)` when the consumer went away.
async fn stream_all(tx: &Tx<'_>, out: &Producer) -> StoreResult<bool> {
    for kind in RECORD_KINDS {
        let sql = transfer::select_all(kind);
        let rows = tx
            .query_raw(sql.as_str(), std::iter::empty::<&(dyn ToSql + Sync)>())
            .await
            .map_err(store_error)?;
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = rows.try_next().await.map_err(store_error)? {
            if !out.send(record(kind, &row)?).await {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn record(kind: &'static RecordKind, row: &Row) -> StoreResult<ExportRecord> {
    let corrupt =
        |f: &str, e: tokio_postgres::Error| StoreError::Corrupt(format!("{}.{f}: {e}", kind.name));
    let mut values = Vec::with_capacity(kind.fields.len());
    for (i, f) in kind.fields.iter().enumerate() {
        let v = match f.ty {
            FieldType::Int => row
                .try_get::<_, Option<i64>>(i)
                .map_err(|e| corrupt(f.name, e))?
                .map(Value::Int),
            FieldType::Bool => row
                .try_get::<_, Option<bool>>(i)
                .map_err(|e| corrupt(f.name, e))?
                .map(Value::Bool),
            FieldType::Text => row
                .try_get::<_, Option<String>>(i)
                .map_err(|e| corrupt(f.name, e))?
                .map(Value::Text),
            FieldType::Bytes => row
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(|e| corrupt(f.name, e))?
                .map(Value::Bytes),
        };
        values.push(v.unwrap_or(Value::Null));
    }
    ExportRecord::new(kind, values)
}

/// Imports `records` into the (empty) database, all or nothing. Returns what was written and
/// the audit chain's new head, if entries were imported.
pub(crate) async fn import(
    pool: &Pool,
    mut records: RecordStream,
) -> StoreResult<(ImportSummary, Option<AuditHead>)> {
    let mut conn = pool.get().await.map_err(pool_error)?;
    let tx = conn.transaction().await.map_err(store_error)?;
    let written = write_all(&tx, &mut records).await?;
    tx.commit().await.map_err(store_error)?;
    Ok(written)
}

async fn write_all(
    tx: &Tx<'_>,
    records: &mut RecordStream,
) -> StoreResult<(ImportSummary, Option<AuditHead>)> {
    let tables: Vec<String> = RECORD_KINDS
        .iter()
        .map(|k| format!("\"{}\"", k.name))
        .collect();
    tx.batch_execute(&format!(
        "SELECT 1 FROM audit_head FOR UPDATE; LOCK TABLE {} IN EXCLUSIVE MODE",
        tables.join(", ")
    ))
    .await
    .map_err(store_error)?;
    let first = tx
        .query_opt(transfer::first_non_empty().as_str(), &[])
        .await
        .map_err(store_error)?;
    if let Some(row) = first {
        let kind: String = row.try_get(0).map_err(store_error)?;
        return Err(transfer::not_empty(&kind));
    }
    let mut summary = ImportSummary::new();
    let mut chain = ChainEnd::default();
    let mut batch = Batch::default();
    while let Some(r) = transfer::next(records).await? {
        summary.add(r.kind());
        chain.see(&r);
        if batch.must_flush_before(&r) {
            flush(tx, &mut batch).await?;
        }
        batch.push(r);
    }
    flush(tx, &mut batch).await?;
    let head = chain.head()?;
    if let Some(h) = &head {
        let seq = i64::try_from(h.seq).map_err(|_| StoreError::Corrupt("audit seq".into()))?;
        tx.execute(
            "UPDATE audit_head SET seq = $1, hash = $2",
            &[&seq, &h.hash],
        )
        .await
        .map_err(store_error)?;
    }
    Ok((summary, head))
}

/// One column of a batch, as the array `UNNEST` takes.
enum Column {
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Column {
    fn new(ty: FieldType, n: usize) -> Self {
        match ty {
            FieldType::Int => Column::Int(Vec::with_capacity(n)),
            FieldType::Bool => Column::Bool(Vec::with_capacity(n)),
            FieldType::Text => Column::Text(Vec::with_capacity(n)),
            FieldType::Bytes => Column::Bytes(Vec::with_capacity(n)),
        }
    }

    /// Appends a value (already checked against the field's type by `ExportRecord::new`).
    fn push(&mut self, v: Value) {
        match (self, v) {
            (Column::Int(c), Value::Int(i)) => c.push(Some(i)),
            (Column::Bool(c), Value::Bool(b)) => c.push(Some(b)),
            (Column::Text(c), Value::Text(t)) => c.push(Some(t)),
            (Column::Bytes(c), Value::Bytes(b)) => c.push(Some(b)),
            (Column::Int(c), _) => c.push(None),
            (Column::Bool(c), _) => c.push(None),
            (Column::Text(c), _) => c.push(None),
            (Column::Bytes(c), _) => c.push(None),
        }
    }

    fn sql_type(ty: FieldType) -> &'static str {
        match ty {
            FieldType::Int => "bigint[]",
            FieldType::Bool => "boolean[]",
            FieldType::Text => "text[]",
            FieldType::Bytes => "bytea[]",
        }
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Column::Int(c) => c,
            Column::Bool(c) => c,
            Column::Text(c) => c,
            Column::Bytes(c) => c,
        }
    }
}

async fn flush(tx: &Tx<'_>, batch: &mut Batch) -> StoreResult<()> {
    let Some((kind, rows)) = batch.take() else {
        return Ok(());
    };
    let mut columns: Vec<Column> = kind
        .fields
        .iter()
        .map(|f| Column::new(f.ty, rows.len()))
        .collect();
    for r in rows {
        for (c, v) in columns.iter_mut().zip(r.into_values()) {
            c.push(v);
        }
    }
    let arrays: Vec<String> = kind
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| format!("${}::{}", i + 1, Column::sql_type(f.ty)))
        .collect();
    let sql = format!(
        "INSERT INTO {} SELECT * FROM UNNEST({})",
        transfer::column_list(kind),
        arrays.join(", ")
    );
    let st = tx.prepare_cached(&sql).await.map_err(store_error)?;
    let params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(Column::as_sql).collect();
    tx.execute(&st, &params)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(d) => StoreError::Corrupt(format!(
                "the database refused a {} record: {}",
                kind.name,
                d.message()
            )),
            None => store_error(e),
        })?;
    Ok(())
}
