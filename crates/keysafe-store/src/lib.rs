//! Implementations of keysafe-core's `Store`. SQLite is the embedded default, PostgreSQL the
//! multi-node backend; each backend keeps its own migrations under `migrations/<backend>/` and
//! its differences stay inside its module.

pub mod postgres;
pub mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
