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
    /// The server is fine but could not do it now (a lock not granted within `lock_timeout`, a
    /// statement cancelled): the whole batch fails as `Unavailable`; the connection is kept.
    Busy,
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
    // lock_timeout expired: another session held a lock too long (a hung node, a commit
    // waiting for a missing synchronous standby); or the statement was cancelled.
    if *code == SqlState::LOCK_NOT_AVAILABLE || *code == SqlState::QUERY_CANCELED {
        return Class::Busy;
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
        Class::Connection | Class::Busy => StoreError::Unavailable(message()),
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

#[cfg(test)]
mod tests {
    //! Real errors from a real server, each mapped by its SQLSTATE.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio_postgres::{Client, NoTls};

    async fn connect(url: &str) -> Client {
        let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    #[tokio::test]
    async fn sqlstates_map_to_store_errors() {
        let cluster = keysafe_testpg::shared().unwrap();
        let db = cluster.create_database("").unwrap();
        let url = cluster.url(&db);
        let a = connect(&url).await;
        let b = connect(&url).await;
        a.batch_execute(
            "CREATE TABLE parent (id int PRIMARY KEY); \
             CREATE TABLE child (id int REFERENCES parent(id)); \
             CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); \
             INSERT INTO parent VALUES (1); INSERT INTO t VALUES (1, 0), (2, 0);",
        )
        .await
        .unwrap();
        let err = |r: Result<u64, tokio_postgres::Error>| r.unwrap_err();

        let dup = err(a.execute("INSERT INTO parent VALUES (1)", &[]).await);
        assert_eq!(classify(&dup), Class::Statement);
        assert_eq!(store_error(dup), StoreError::AlreadyExists);
        let orphan = err(a.execute("INSERT INTO child VALUES (2)", &[]).await);
        assert_eq!(store_error(orphan), StoreError::NotFound);

        a.batch_execute("BEGIN READ ONLY").await.unwrap();
        let ro = err(a.execute("INSERT INTO parent VALUES (3)", &[]).await);
        assert_eq!(classify(&ro), Class::ReadOnly);
        assert_eq!(store_error(ro), StoreError::ReadOnly);
        a.batch_execute("ROLLBACK").await.unwrap();

        // A serialization failure: two SERIALIZABLE transactions that each read what the
        // other writes (write skew).
        for c in [&a, &b] {
            c.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT sum(v) FROM t")
                .await
                .unwrap();
        }
        a.execute("UPDATE t SET v = 1 WHERE id = 1", &[])
            .await
            .unwrap();
        b.execute("UPDATE t SET v = 1 WHERE id = 2", &[])
            .await
            .unwrap();
        a.batch_execute("COMMIT").await.unwrap();
        let ser = b.batch_execute("COMMIT").await.unwrap_err();
        assert_eq!(ser.code(), Some(&SqlState::T_R_SERIALIZATION_FAILURE));
        assert_eq!(classify(&ser), Class::Retry);
        assert!(matches!(store_error(ser), StoreError::Unavailable(_)));

        // A deadlock: each holds the row the other wants.
        a.batch_execute("BEGIN; UPDATE t SET v = 2 WHERE id = 1")
            .await
            .unwrap();
        b.batch_execute("BEGIN; UPDATE t SET v = 2 WHERE id = 2")
            .await
            .unwrap();
        let (ra, rb) = tokio::join!(
            a.execute("UPDATE t SET v = 3 WHERE id = 2", &[]),
            b.execute("UPDATE t SET v = 3 WHERE id = 1", &[]),
        );
        let dead = match (ra, rb) {
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
            other => panic!("expected one deadlock victim: {other:?}"),
        };
        assert_eq!(dead.code(), Some(&SqlState::T_R_DEADLOCK_DETECTED));
        assert_eq!(classify(&dead), Class::Retry);
        for c in [&a, &b] {
            c.batch_execute("ROLLBACK").await.unwrap();
        }

        // A connection the server closed.
        let pid: i32 = b
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        a.execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        let gone = err(b.execute("SELECT 1", &[]).await);
        assert_eq!(classify(&gone), Class::Connection);
        assert!(matches!(store_error(gone), StoreError::Unavailable(_)));
    }
}
