//! The storage tests: the conformance suite (`suite`), written once against the store traits
//! and instantiated for every backend below, and the SQLite backend's own tests (`sqlite`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod suite;
mod backends;
mod sqlite;

// One line per backend: every case of the suite runs against it.
conformance!(on_sqlite, crate::backends::Sqlite);
