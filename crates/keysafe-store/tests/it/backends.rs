//! The backends the conformance suite runs on. Each makes fresh, empty stores through the
//! factory (`keysafe_store::create`) and knows the few raw-SQL tricks the suite needs.

use crate::suite::TestBackend;
use keysafe_store::StorageConfig;
use keysafe_store::testing::RawDb;
use keysafe_testpg::TestCluster;

fn config(url: &str, dir: &std::path::Path) -> StorageConfig {
    let settings: keysafe_store::StorageSettings =
        toml::from_str(&format!("url = {url:?}")).unwrap();
    StorageConfig::from_settings(&settings, dir).unwrap()
}

/// SQLite: a new database file in a temporary directory per store.
pub struct Sqlite;

#[async_trait::async_trait]
impl TestBackend for Sqlite {
    async fn fresh_config(&self) -> (StorageConfig, Box<dyn std::any::Any + Send>) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config("sqlite:store.db", dir.path());
        (cfg, Box::new(dir))
    }

    async fn refuse_audit_target(&self, raw: &mut RawDb, target: &str) {
        raw.execute_script(&format!(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.target = '{target}' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ))
        .await
        .unwrap();
    }
}

/// The throwaway PostgreSQL cluster this test binary shares (started on first use, stopped
/// when the binary exits). A test without it fails and says what to install.
pub fn cluster() -> &'static TestCluster {
    keysafe_testpg::shared()
        .unwrap_or_else(|e| panic!("the PostgreSQL tests need a PostgreSQL server: {e}"))
}

/// PostgreSQL: a new database per store on the shared cluster, created with `options` (for
/// example an ICU collation), reached over TCP as the superuser.
pub struct Postgres {
    pub options: &'static str,
}

impl Postgres {
    pub const DEFAULT: Postgres = Postgres { options: "" };
    /// A database whose default collation is ICU's en-US, which orders `aB` before `a_b` and
    /// `A` after `a`: names must still compare as bytes.
    pub const ICU_EN_US: Postgres = Postgres {
        options: "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'",
    };
}

#[async_trait::async_trait]
impl TestBackend for Postgres {
    async fn fresh_config(&self) -> (StorageConfig, Box<dyn std::any::Any + Send>) {
        let c = cluster();
        let options = self.options;
        let db = tokio::task::spawn_blocking(move || c.create_database(options))
            .await
            .unwrap()
            .unwrap();
        (config(&c.url(&db), std::path::Path::new("/")), Box::new(()))
    }

    async fn refuse_audit_target(&self, raw: &mut RawDb, target: &str) {
        raw.execute_script(&format!(
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.target = '{target}' THEN RAISE EXCEPTION 'refused'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON audit_log FOR EACH ROW \
             EXECUTE FUNCTION refuse_audit();"
        ))
        .await
        .unwrap();
    }
}
