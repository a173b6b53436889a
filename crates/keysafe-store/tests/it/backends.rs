//! The backends the conformance suite runs on. Each makes fresh, empty stores through the
//! factory (`keysafe_store::create`) and knows the few raw-SQL tricks the suite needs.

use crate::suite::TestBackend;
use keysafe_store::StorageConfig;
use keysafe_store::testing::RawDb;

/// SQLite: a new database file in a temporary directory per store.
pub struct Sqlite;

#[async_trait::async_trait]
impl TestBackend for Sqlite {
    async fn fresh_config(&self) -> (StorageConfig, Box<dyn std::any::Any + Send>) {
        let dir = tempfile::tempdir().unwrap();
        let settings: keysafe_store::StorageSettings =
            toml::from_str("url = \"sqlite:store.db\"").unwrap();
        let cfg = StorageConfig::from_settings(&settings, dir.path()).unwrap();
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
