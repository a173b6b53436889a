//! What only the SQLite backend has: its durability settings.

use keysafe_store::sqlite::SqliteStore;

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
