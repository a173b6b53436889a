//! The storage tests: the conformance suite (`suite`), written once against the store traits
//! and instantiated for every backend below, and what only one backend has (`sqlite`,
//! `postgres`: durability settings, file snapshots, ICU collations, multi-host URLs, standbys,
//! TLS, passwords, retried deadlocks, concurrent migrations), and upgrades from the last
//! release's schema on both (`upgrade`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod suite;
mod backends;
mod crossing;
mod postgres;
mod sqlite;
mod upgrade;

// One line per backend: every case of the suite runs against it.
conformance!(on_sqlite, crate::backends::Sqlite);
conformance!(on_postgres, crate::backends::Postgres::DEFAULT);
