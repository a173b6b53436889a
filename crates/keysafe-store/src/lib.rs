//! Implementations of keysafe-core's `Store`. SQLite is the embedded default; each backend keeps
//! its own migrations under `migrations/<backend>/` and its differences stay inside its module.

pub mod sqlite;

pub use sqlite::SqliteStore;
