//! keysafe's storage backends behind one seam. [`open`] and [`create`] are the only place that
//! knows which backends exist: they turn a [`StorageConfig`] (the validated `[storage]` section)
//! into an `Arc<dyn Store>`, and nothing above this crate names a backend. Each backend keeps
//! its own migrations under `migrations/<backend>/` and its differences inside its module; all
//! of them keep the contracts written on `keysafe_core::store` and pass the same conformance
//! suite (`tests/it/suite`).
//!
//! Backends: SQLite (`sqlite:PATH`, the embedded default) and PostgreSQL
//! (`postgres://USER@HOST[,HOST2...]/DATABASE?...`, the multi-node backend).

pub mod config;
mod integrity;
pub mod postgres;
mod schema;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod transfer;

pub use config::{StorageConfig, StorageConfigError, StorageSettings, storage_section};

use config::{Backend, PasswordSource};
use keysafe_core::store::{Store, StoreError, StoreResult};
use std::sync::Arc;

/// The PostgreSQL settings of a validated URL, with the password read now from where the
/// configuration says (it is never kept in the configuration itself).
pub(crate) fn pg_config(url: &str, password: &PasswordSource) -> StoreResult<postgres::PgConfig> {
    let password = password
        .read()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
        .map(postgres::PgPassword::from);
    // The URL was checked when the configuration was read; this cannot fail for a URL that
    // passed, but it must not panic if it did.
    postgres::PgConfig::parse(url, password).map_err(|e| StoreError::Unsupported(e.to_string()))
}

/// Opens an existing store and brings its schema up to date. `NotFound`: there is none (no
/// database file; a PostgreSQL database keysafe never initialised).
pub async fn open(cfg: &StorageConfig) -> StoreResult<Arc<dyn Store>> {
    match &cfg.backend {
        Backend::Sqlite { path } => Ok(Arc::new(sqlite::SqliteStore::open(path).await?)),
        Backend::Postgres { url, password } => Ok(Arc::new(
            postgres::PostgresStore::open(&pg_config(url, password)?).await?,
        )),
    }
}

/// Creates a new, empty store. `AlreadyExists`: one is there already (a database file; a
/// PostgreSQL database keysafe initialised). On PostgreSQL the database itself must exist
/// (its administrator creates it); keysafe creates its tables in it.
pub async fn create(cfg: &StorageConfig) -> StoreResult<Arc<dyn Store>> {
    match &cfg.backend {
        Backend::Sqlite { path } => Ok(Arc::new(sqlite::SqliteStore::create(path).await?)),
        Backend::Postgres { url, password } => Ok(Arc::new(
            postgres::PostgresStore::create(&pg_config(url, password)?).await?,
        )),
    }
}
