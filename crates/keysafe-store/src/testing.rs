//! Raw access to a store's database for tests that play an intruder with database access
//! (tampering with rows, reading what is at rest), without naming the backend. Behind the
//! `testing` feature: never in a server build.
//!
//! SQL is the backend's own dialect; placeholders are written `?1`, `?2`, ... and each backend's
//! connection translates them if it needs another form. Values travel as [`RawValue`].

use crate::config::{Backend, StorageConfig};
use keysafe_core::store::{StoreError, StoreResult};
use sqlx::{ConnectOptions, Row, TypeInfo, ValueRef};
use std::path::PathBuf;

/// One value bound to or read from a raw statement.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl RawValue {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            RawValue::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            RawValue::Text(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_blob(&self) -> Option<&[u8]> {
        match self {
            RawValue::Blob(v) => Some(v),
            _ => None,
        }
    }
}

impl From<i64> for RawValue {
    fn from(v: i64) -> Self {
        RawValue::Int(v)
    }
}

impl From<&str> for RawValue {
    fn from(v: &str) -> Self {
        RawValue::Text(v.to_owned())
    }
}

impl From<String> for RawValue {
    fn from(v: String) -> Self {
        RawValue::Text(v)
    }
}

impl From<Vec<u8>> for RawValue {
    fn from(v: Vec<u8>) -> Self {
        RawValue::Blob(v)
    }
}

impl From<&[u8]> for RawValue {
    fn from(v: &[u8]) -> Self {
        RawValue::Blob(v.to_vec())
    }
}

/// A read-write connection to the store's database that bypasses the store.
pub struct RawDb {
    conn: sqlx::SqliteConnection,
}

impl std::fmt::Debug for RawDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawDb")
    }
}

fn raw_error(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_all<'q>(mut q: Query<'q>, params: &[RawValue]) -> Query<'q> {
    for p in params {
        q = match p {
            RawValue::Null => q.bind(None::<i64>),
            RawValue::Int(v) => q.bind(*v),
            RawValue::Real(v) => q.bind(*v),
            RawValue::Text(v) => q.bind(v.clone()),
            RawValue::Blob(v) => q.bind(v.clone()),
        };
    }
    q
}

impl RawDb {
    /// Connects to the database `cfg` names.
    pub async fn connect(cfg: &StorageConfig) -> StoreResult<Self> {
        match &cfg.backend {
            Backend::Sqlite { path } => {
                let conn = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(std::time::Duration::from_secs(10))
                    .connect()
                    .await
                    .map_err(raw_error)?;
                Ok(Self { conn })
            }
            Backend::Postgres { .. } => Err(StoreError::Unsupported(
                "raw access to PostgreSQL is not built into this keysafe yet".into(),
            )),
        }
    }

    /// Runs one statement; answers how many rows it changed.
    pub async fn execute(&mut self, sql: &str, params: &[RawValue]) -> StoreResult<u64> {
        let q = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), params);
        Ok(q.execute(&mut self.conn)
            .await
            .map_err(raw_error)?
            .rows_affected())
    }

    /// Runs several statements (no parameters), for example a trigger definition.
    pub async fn execute_script(&mut self, sql: &str) -> StoreResult<()> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut self.conn)
            .await
            .map(|_| ())
            .map_err(raw_error)
    }

    /// Every row a query returns, each as its columns' values.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[RawValue],
    ) -> StoreResult<Vec<Vec<RawValue>>> {
        let q = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), params);
        let rows = q.fetch_all(&mut self.conn).await.map_err(raw_error)?;
        rows.iter()
            .map(|row| {
                (0..row.columns().len())
                    .map(|i| decode(row, i))
                    .collect::<StoreResult<Vec<_>>>()
            })
            .collect()
    }

    /// The first column of the first row; `NotFound` when there is no row.
    pub async fn scalar(&mut self, sql: &str, params: &[RawValue]) -> StoreResult<RawValue> {
        self.query(sql, params)
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .ok_or(StoreError::NotFound)
    }
}

fn decode(row: &sqlx::sqlite::SqliteRow, i: usize) -> StoreResult<RawValue> {
    let raw = row.try_get_raw(i).map_err(raw_error)?;
    if raw.is_null() {
        return Ok(RawValue::Null);
    }
    let kind = raw.type_info().name().to_owned();
    Ok(match kind.as_str() {
        "INTEGER" | "BOOLEAN" => RawValue::Int(row.try_get(i).map_err(raw_error)?),
        "REAL" => RawValue::Real(row.try_get(i).map_err(raw_error)?),
        "TEXT" => RawValue::Text(row.try_get(i).map_err(raw_error)?),
        _ => RawValue::Blob(row.try_get(i).map_err(raw_error)?),
    })
}

/// The files on disk that hold the store's data (whether or not each exists right now), for
/// tests that search what is at rest: for SQLite the database, its write-ahead log and its
/// shared-memory index.
pub fn files_at_rest(cfg: &StorageConfig) -> Vec<PathBuf> {
    match &cfg.backend {
        Backend::Sqlite { path } => ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
            .collect(),
        Backend::Postgres { .. } => Vec::new(),
    }
}
