//! What only the SQLite backend has: its durability settings and file snapshots for backups.

use crate::suite::{client_record, create_org, fp, insert, kek, key, org, ts, ver, version};
use keysafe_core::store::{Mutation, StoreError};
use keysafe_store::sqlite::SqliteStore;
use keysafe_store::{StorageConfig, snapshot};
use std::path::Path;

fn config(dir: &Path, file: &str) -> StorageConfig {
    let settings: keysafe_store::StorageSettings =
        toml::from_str(&format!("url = \"sqlite:{file}\"")).unwrap();
    StorageConfig::from_settings(&settings, dir).unwrap()
}

/// WAL, `synchronous=FULL` (an acknowledged write survives power loss) and `secure_delete`
/// (purged ciphertext does not linger in free pages).
#[tokio::test]
async fn settings_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::create(&dir.path().join("x.db")).await.unwrap();
    assert_eq!(
        s.durability_settings().await.unwrap(),
        ("wal".to_owned(), 2, 1)
    );
}

#[tokio::test]
async fn snapshots_copy_the_whole_store_and_install_where_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "live.db");
    let s = keysafe_store::create(&cfg).await.unwrap();
    s.apply(create_org("acme")).await.unwrap();
    s.apply(insert(client_record(fp('a'), "acme", ts(1))))
        .await
        .unwrap();
    s.apply(kek(1, "file")).await.unwrap();
    s.apply(Mutation::PutVersion {
        org: org(),
        key: key('a', "snap"),
        expected_current: None,
        expected_acl_serial: None,
        version: version(1, b"payload"),
    })
    .await
    .unwrap();
    let dest = dir.path().join("snap.db");
    snapshot::take(&cfg, &dest).await.unwrap();
    assert_eq!(
        snapshot::take(&cfg, &dest).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    let copy = snapshot::open(&dest).await.unwrap();
    let (_, v) = copy
        .get_version(&key('a', "snap"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.ciphertext, b"payload");
    assert_eq!(
        copy.load_keks().await.unwrap(),
        s.load_keks().await.unwrap()
    );
    copy.close().await;

    // Installed where another configuration keeps its data (a subdirectory here), privately.
    let bytes = std::fs::read(&dest).unwrap();
    let target = config(dir.path(), "restored/keysafe.db");
    snapshot::install(&target, &bytes).await.unwrap();
    assert_eq!(
        snapshot::install(&target, &bytes).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("restored/keysafe.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
    let restored = keysafe_store::open(&target).await.unwrap();
    assert_eq!(
        restored
            .get_deposit(&key('a', "snap"))
            .await
            .unwrap()
            .unwrap()
            .current_version,
        ver(1)
    );
}
