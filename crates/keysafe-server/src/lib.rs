//! The keysafe HTTPS server: TLS (rustls) with per-request client identity, the route table and
//! its handlers, server configuration, data-directory initialisation, and the accept loop
//! `run(listener, app, shutdown)`. It holds no state of its own beyond caches; all state is in
//! the store.

mod anonymous;
mod attempts;
pub mod audit;
pub mod audit_spool;
pub mod cluster;
pub mod config;
mod error;
mod extract;
mod headers;
pub mod health_log;
pub mod identity;
pub mod init;
pub mod metrics;
mod middleware;
pub mod openapi;
pub mod request_log;
mod routes;
pub mod server;
// Seals and backups.
pub mod backup;
pub mod seal;
mod state;
pub mod tls;

pub use error::ApiError;
/// The route table, for driving the handlers without TLS (the fuzz targets).
pub use routes::{RouterService, openapi_document, router};
pub use server::{App, open_app, open_app_with, run, run_with_ready};
pub use state::{AppState, AppStateInner, RegistrationLimits};
