//! The one place that turns PostgreSQL errors into `StoreError` kinds, by SQLSTATE
//! (`tokio_postgres::error::SqlState`), never by message text. Messages kept for the log are
//! the server's primary message only: its DETAIL can quote row contents.

use keysafe_core::store::StoreError;
use tokio_postgres::error::SqlState;

/// What the writer does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Serialization failure or deadlock: the transaction was rolled back; run it again.
    Retry,
    /// The server refuses writes (a standby, or a primary being demoted): the connection is
    /// useless for writing and the whole batch fails.
    ReadOnly,
    /// The connection or the server is gone or going: the whole batch fails, the connection is
    /// dropped from the pool.
    Connection,
    /// A failure of one statement, caused by what it tried to do (uniqueness, reference,
    /// check constraint, a trigger): that change fails alone.
    Statement,
}

pub(crate) fn classify(e: &tokio_postgres::Error) -> Class {
    let Some(code) = e.code() else {
        // No SQLSTATE: a client-side failure. Closed connections and I/O errors are the
        // connection's; the rest (encoding a parameter, decoding a row) the statement's.
        let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
        return if e.is_closed() || io {
            Class::Connection
        } else {
            Class::Statement
        };
    };
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        return Class::Retry;
    }
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        return Class::ReadOnly;
    }
    let class = &code.code()[..2];
    match class {
        // 08 connection exception, 57 operator intervention (shutdown, cannot connect now,
        // query canceled), 53 insufficient resources (too many connections, disk full),
        // 58 system error, 28 invalid authorization, XX internal error.
        "08" | "57" | "53" | "58" | "28" | "XX" => Class::Connection,
        _ => Class::Statement,
    }
}

/// What to log of an error: the server's primary message and SQLSTATE, or the client-side
/// error with its causes (tokio-postgres' own text names only the kind).
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The `StoreError` for a PostgreSQL error.
pub(crate) fn store_error(e: tokio_postgres::Error) -> StoreError {
    let message = || describe(&e);
    match classify(&e) {
        Class::Retry => StoreError::Unavailable(format!(
            "the database kept aborting the transaction: {}",
            message()
        )),
        Class::ReadOnly => StoreError::ReadOnly,
        Class::Connection => StoreError::Unavailable(message()),
        Class::Statement => match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::AlreadyExists,
            Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound,
            _ => StoreError::Backend(message()),
        },
    }
}

/// The `StoreError` for a failure to get a connection from the pool.
pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        // Failing to connect (refused, TLS, authentication, no read-write host) makes the
        // database unavailable, whatever the cause; the cause goes into the message.
        deadpool_postgres::PoolError::Backend(e) => match classify(&e) {
            Class::ReadOnly => StoreError::ReadOnly,
            _ => {
                StoreError::Unavailable(format!("cannot connect to the database: {}", describe(&e)))
            }
        },
        deadpool_postgres::PoolError::Timeout(_) => {
            StoreError::Unavailable("no database connection became available in time".into())
        }
        other => StoreError::Unavailable(format!("database connection pool: {other}")),
    }
}
