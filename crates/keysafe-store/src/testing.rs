//! Raw access to a store's database for tests that play an intruder with database access
//! (tampering with rows, reading what is at rest), without naming the backend. Behind the
//! `testing` feature: never in a server build.
//!
//! SQL is written so that both dialects take it where a test needs both (plain INSERT, UPDATE,
//! DELETE and SELECT of the shared schema); placeholders are written `?1`, `?2`, ... and the
//! PostgreSQL connection turns them into `$1`, `$2`, .... Values travel as [`RawValue`]: an
//! `Int` binds to an integer or boolean column (0 is false), and booleans read back as `Int`
//! (0 or 1) on both backends, as SQLite stores them.

use crate::config::{Backend, StorageConfig};
use keysafe_core::store::{StoreError, StoreResult};
use sqlx::{ConnectOptions, Row, TypeInfo, ValueRef};
use std::path::PathBuf;
use tokio_postgres::types::{ToSql, Type};

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
    conn: Conn,
}

enum Conn {
    /// The connection and the database file.
    Sqlite(sqlx::SqliteConnection, PathBuf),
    Postgres(tokio_postgres::Client),
}

impl std::fmt::Debug for RawDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawDb")
    }
}

fn announce(db: &std::path::Path) -> StoreResult<()> {
    crate::sqlite::row_cache::announce_change(db)
        .map_err(|e| StoreError::Backend(format!("cannot announce a raw change: {e}")))
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
    /// Connects to the database `cfg` names (with its password, for PostgreSQL).
    pub async fn connect(cfg: &StorageConfig) -> StoreResult<Self> {
        // SQLite is configured before anything in the process initialises it, sqlx included.
        configure_sqlite();
        let conn = match &cfg.backend {
            Backend::Sqlite { path } => Conn::Sqlite(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(std::time::Duration::from_secs(10))
                    .connect()
                    .await
                    .map_err(raw_error)?,
                path.clone(),
            ),
            Backend::Postgres { url, password } => {
                let pg = crate::pg_config(url, password)?;
                Conn::Postgres(crate::postgres::connect_raw(&pg).await?)
            }
        };
        Ok(Self { conn })
    }

    /// Which backend this connection talks to: `"sqlite"` or `"postgres"`, for the few tests
    /// whose SQL must differ (triggers, blob literals).
    pub fn dialect(&self) -> &'static str {
        match self.conn {
            Conn::Sqlite(..) => "sqlite",
            Conn::Postgres(_) => "postgres",
        }
    }

    /// Runs one statement; answers how many rows it changed.
    ///
    /// On SQLite every write also advances the change epoch beside the file, as every keysafe
    /// writer does, so the next read of a changed deposit finds the row as written here rather
    /// than a cached copy (an intruder who does not is served the authentic cached row for at
    /// most `MAX_AGE`, five seconds: see `sqlite::row_cache`).
    pub async fn execute(&mut self, sql: &str, params: &[RawValue]) -> StoreResult<u64> {
        match &mut self.conn {
            Conn::Sqlite(conn, path) => {
                let q = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), params);
                let n = q
                    .execute(&mut *conn)
                    .await
                    .map_err(raw_error)?
                    .rows_affected();
                announce(path)?;
                Ok(n)
            }
            Conn::Postgres(client) => {
                let st = client
                    .prepare(&dollar_placeholders(sql))
                    .await
                    .map_err(pg_error)?;
                let args = pg_args(st.params(), params)?;
                client.execute(&st, &refs(&args)).await.map_err(pg_error)
            }
        }
    }

    /// Runs several statements (no parameters), for example a trigger definition; on SQLite
    /// it advances the change epoch as [`RawDb::execute`] does.
    pub async fn execute_script(&mut self, sql: &str) -> StoreResult<()> {
        match &mut self.conn {
            Conn::Sqlite(conn, path) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut *conn)
                    .await
                    .map_err(raw_error)?;
                announce(path)
            }
            Conn::Postgres(client) => client.batch_execute(sql).await.map_err(pg_error),
        }
    }

    /// Every row a query returns, each as its columns' values.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[RawValue],
    ) -> StoreResult<Vec<Vec<RawValue>>> {
        match &mut self.conn {
            Conn::Sqlite(conn, _) => {
                let q = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), params);
                let rows = q.fetch_all(&mut *conn).await.map_err(raw_error)?;
                rows.iter()
                    .map(|row| {
                        (0..row.columns().len())
                            .map(|i| decode(row, i))
                            .collect::<StoreResult<Vec<_>>>()
                    })
                    .collect()
            }
            Conn::Postgres(client) => {
                let st = client
                    .prepare(&dollar_placeholders(sql))
                    .await
                    .map_err(pg_error)?;
                let args = pg_args(st.params(), params)?;
                let rows = client.query(&st, &refs(&args)).await.map_err(pg_error)?;
                rows.iter()
                    .map(|row| {
                        (0..row.columns().len())
                            .map(|i| decode_pg(row, i))
                            .collect::<StoreResult<Vec<_>>>()
                    })
                    .collect()
            }
        }
    }

    /// Makes every later INSERT into `table` fail, behind the store's back (a trigger named
    /// `name`), as a broken database would; [`RawDb::allow_inserts`] removes it. Names are
    /// letters, digits and `_` only.
    pub async fn fail_inserts(&mut self, name: &str, table: &str) -> StoreResult<()> {
        check_identifier(name)?;
        check_identifier(table)?;
        let sql = match self.conn {
            Conn::Sqlite(..) => format!(
                "CREATE TRIGGER {name} BEFORE INSERT ON {table} \
                 BEGIN SELECT RAISE(ABORT, '{name}'); END"
            ),
            Conn::Postgres(_) => format!(
                "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION '{name}'; END $$; \
                 CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW \
                 EXECUTE FUNCTION {name}();"
            ),
        };
        self.execute_script(&sql).await
    }

    /// Removes a trigger [`RawDb::fail_inserts`] made.
    pub async fn allow_inserts(&mut self, name: &str, table: &str) -> StoreResult<()> {
        check_identifier(name)?;
        check_identifier(table)?;
        let sql = match self.conn {
            Conn::Sqlite(..) => format!("DROP TRIGGER {name}"),
            Conn::Postgres(_) => {
                format!("DROP TRIGGER {name} ON {table}; DROP FUNCTION {name}();")
            }
        };
        self.execute_script(&sql).await
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

fn check_identifier(s: &str) -> StoreResult<()> {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(StoreError::Backend(format!("not a plain SQL name: {s:?}")))
    }
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            StoreError::Backend(format!("{} (SQLSTATE {})", db.message(), db.code().code()))
        }
        None => StoreError::Backend(e.to_string()),
    }
}

/// `?N` placeholders as PostgreSQL's `$N`, outside string literals and quoted names.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            None => out.push(c),
        }
    }
    out
}

type PgArg = Box<dyn ToSql + Sync + Send>;

fn refs(args: &[PgArg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Converts each value to what its parameter's type takes.
fn pg_args(types: &[Type], params: &[RawValue]) -> StoreResult<Vec<PgArg>> {
    if types.len() != params.len() {
        return Err(StoreError::Backend(format!(
            "the statement takes {} parameters, {} given",
            types.len(),
            params.len()
        )));
    }
    types
        .iter()
        .zip(params)
        .map(|(ty, v)| pg_arg(ty, v))
        .collect()
}

fn pg_arg(ty: &Type, v: &RawValue) -> StoreResult<PgArg> {
    let mismatch = || StoreError::Backend(format!("cannot bind {v:?} to a parameter of type {ty}"));
    let int = |n: i64| -> StoreResult<PgArg> {
        Ok(match *ty {
            Type::BOOL => Box::new(n != 0),
            Type::INT2 => Box::new(i16::try_from(n).map_err(|_| mismatch())?),
            Type::INT4 => Box::new(i32::try_from(n).map_err(|_| mismatch())?),
            Type::INT8 => Box::new(n),
            Type::TEXT | Type::VARCHAR => Box::new(n.to_string()),
            _ => return Err(mismatch()),
        })
    };
    Ok(match v {
        RawValue::Null => match *ty {
            Type::BOOL => Box::new(None::<bool>),
            Type::INT2 => Box::new(None::<i16>),
            Type::INT4 => Box::new(None::<i32>),
            Type::INT8 => Box::new(None::<i64>),
            Type::FLOAT4 | Type::FLOAT8 => Box::new(None::<f64>),
            Type::BYTEA => Box::new(None::<Vec<u8>>),
            _ => Box::new(None::<String>),
        },
        RawValue::Int(n) => int(*n)?,
        RawValue::Real(f) => match *ty {
            Type::FLOAT8 => Box::new(*f),
            // The narrowing a FLOAT4 column does itself.
            #[allow(clippy::cast_possible_truncation)]
            Type::FLOAT4 => Box::new(*f as f32),
            _ => return Err(mismatch()),
        },
        RawValue::Text(t) => match *ty {
            Type::BYTEA => return Err(mismatch()),
            _ => Box::new(t.clone()),
        },
        RawValue::Blob(b) => match *ty {
            Type::BYTEA => Box::new(b.clone()),
            _ => return Err(mismatch()),
        },
    })
}

fn decode_pg(row: &tokio_postgres::Row, i: usize) -> StoreResult<RawValue> {
    let err = |e: tokio_postgres::Error| StoreError::Backend(format!("column {i}: {e}"));
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(err)?
            .map(|b| RawValue::Int(i64::from(b))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(err)?
            .map(|n| RawValue::Int(i64::from(n))),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(err)?
            .map(|n| RawValue::Int(i64::from(n))),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(err)?
            .map(RawValue::Int),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map_err(err)?
            .map(|f| RawValue::Real(f64::from(f))),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(err)?
            .map(RawValue::Real),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(err)?
            .map(RawValue::Blob),
        _ => row
            .try_get::<_, Option<String>>(i)
            .map_err(err)?
            .map(RawValue::Text),
    };
    Ok(v.unwrap_or(RawValue::Null))
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

/// Configures SQLite the way the store does before its first connection; a test that opens
/// SQLite by other means (sqlx) calls this first, so that it never initialises SQLite while the
/// store configures it on another thread.
pub fn configure_sqlite() {
    crate::sqlite::conn::configure_library();
}

/// The files on disk that hold the store's data (whether or not each exists right now), for
/// tests that search what is at rest: for SQLite the database, its write-ahead log and its
/// shared-memory index. None for PostgreSQL: its files belong to the server, wherever that
/// runs (a test that started the server knows its data directory).
pub fn files_at_rest(cfg: &StorageConfig) -> Vec<PathBuf> {
    match &cfg.backend {
        Backend::Sqlite { path } => ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
            .collect(),
        Backend::Postgres { .. } => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::dollar_placeholders;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            dollar_placeholders("UPDATE t SET a = ?1, b = '?2' WHERE \"c?3\" = ?10 AND d = ?"),
            "UPDATE t SET a = $1, b = '?2' WHERE \"c?3\" = $10 AND d = ?"
        );
        assert_eq!(
            dollar_placeholders("x = 'it''s ?1' OR y = ?2"),
            "x = 'it''s ?1' OR y = $2"
        );
    }
}
