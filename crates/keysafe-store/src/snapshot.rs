//! Whole-store file snapshots, for the backup format that carries a database file: a SQLite
//! database copied consistently with `VACUUM INTO` while the server runs, opened to verify it,
//! and installed where a restored configuration expects its database. This is a SQLite-only
//! path, kept apart from the neutral store traits; other backends answer `Unsupported` until
//! backups become a logical export that every backend writes and reads.

use crate::config::{Backend, StorageConfig};
use crate::sqlite::SqliteStore;
use keysafe_core::store::{Store, StoreError, StoreResult};
use std::path::Path;
use std::sync::Arc;

fn unsupported(cfg: &StorageConfig) -> StoreError {
    StoreError::Unsupported(format!(
        "file snapshots exist for SQLite storage only; {cfg} cannot be backed up this way yet"
    ))
}

/// Writes a consistent copy of the whole store to `dest` (which must not exist:
/// `AlreadyExists`) while the store keeps serving.
pub async fn take(cfg: &StorageConfig, dest: &Path) -> StoreResult<()> {
    let Backend::Sqlite { path } = &cfg.backend else {
        return Err(unsupported(cfg));
    };
    crate::sqlite::snapshot(path, dest).await
}

/// Opens a snapshot file (a copy taken by [`take`]) as a store, to read what it holds.
pub async fn open(file: &Path) -> StoreResult<Arc<dyn Store>> {
    Ok(Arc::new(SqliteStore::open(file).await?))
}

/// Puts a snapshot's bytes where `cfg` keeps its data (which must not exist yet:
/// `AlreadyExists`), readable by the owner only, and durably.
pub async fn install(cfg: &StorageConfig, bytes: &[u8]) -> StoreResult<()> {
    let Backend::Sqlite { path } = &cfg.backend else {
        return Err(unsupported(cfg));
    };
    let io = |e: std::io::Error| StoreError::Backend(format!("{}: {e}", path.display()));
    crate::sqlite::create_parent(path)?;
    let mut f = keysafe_core::seal::open_options_private()
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => StoreError::AlreadyExists,
            _ => io(e),
        })?;
    use std::io::Write;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io)
}
