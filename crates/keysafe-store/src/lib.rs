//! keysafe's storage backends behind one seam. [`open`] and [`create`] are the only place that
//! knows which backends exist: they turn a [`StorageConfig`] (the validated `[storage]` section)
//! into an `Arc<dyn Store>`, and nothing above this crate names a backend. Each backend keeps
//! its own migrations under `migrations/<backend>/` and its differences inside its module; all
//! of them keep the contracts written on `keysafe_core::store` and pass the same conformance
//! suite (`tests/it/suite`).
//!
//! Backends: SQLite (`sqlite:PATH`, the embedded default). PostgreSQL URLs are recognised and
//! refused until that backend is built in.

pub mod config;
pub mod snapshot;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{StorageConfig, StorageConfigError, StorageSettings, storage_section};

use config::Backend;
use keysafe_core::store::{Store, StoreError, StoreResult};
use std::sync::Arc;

fn not_built(cfg: &StorageConfig) -> StoreError {
    StoreError::Unsupported(format!(
        "PostgreSQL storage ({cfg}) is not built into this keysafe yet; use sqlite:PATH"
    ))
}

/// Opens an existing store and brings its schema up to date. `NotFound`: there is none.
pub async fn open(cfg: &StorageConfig) -> StoreResult<Arc<dyn Store>> {
    match &cfg.backend {
        Backend::Sqlite { path } => Ok(Arc::new(sqlite::SqliteStore::open(path).await?)),
        Backend::Postgres { .. } => Err(not_built(cfg)),
    }
}

/// Creates a new, empty store. `AlreadyExists`: one is there already.
pub async fn create(cfg: &StorageConfig) -> StoreResult<Arc<dyn Store>> {
    match &cfg.backend {
        Backend::Sqlite { path } => Ok(Arc::new(sqlite::SqliteStore::create(path).await?)),
        Backend::Postgres { .. } => Err(not_built(cfg)),
    }
}
