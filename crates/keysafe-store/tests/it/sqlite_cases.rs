//! The conformance cases on SQLite, so both backends are held to the same contracts.

use crate::cases::{Fixture, conformance_suite, seed};
use async_trait::async_trait;
use keysafe_core::store::Store;
use keysafe_store::SqliteStore;
use sqlx::ConnectOptions as _;
use std::path::PathBuf;
use std::sync::Arc;

struct SqliteFixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Arc<SqliteStore>,
}

impl SqliteFixture {
    async fn raw(&self, sql: &str) {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.path)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

#[async_trait(?Send)]
impl Fixture for SqliteFixture {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn open_again(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&self.path).await.unwrap())
    }

    async fn write_bad_deposit_name(&self) {
        self.raw(&format!(
            "INSERT INTO deposits (owner, name, org, current_version, current_size, deleted, \
             created_at, updated_at) VALUES ('{}', 'bad/../name', 'acme', 1, 1, 0, 1, 1)",
            crate::cases::fp('a').as_str()
        ))
        .await;
    }

    async fn refuse_audit_target(&self, target: &str) {
        self.raw(&format!(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.target = '{target}' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ))
        .await;
    }
}

async fn fixture() -> Box<dyn Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.db");
    let store = SqliteStore::create(&path).await.unwrap();
    seed(&store).await;
    Box::new(SqliteFixture {
        _dir: dir,
        path,
        store: Arc::new(store),
    })
}

// Two cases are pinned by the PostgreSQL run only, until the SQLite store passes them: the decided
// Rewrap contract (NotFound for a missing row or keyring version), and one audit chain across
// two handles on one file (SQLite's writer reads the head before BEGIN IMMEDIATE, so two
// processes appending at once collide on a seq).
conformance_suite!(fixture, without_pending);
