//! Connection hygiene for keysafe's HTTP servers, with no keysafe types so that every server in
//! the workspace (the keysafe API, the KMS gateway) can use it: a connection limiter with a
//! global and a per-source-address cap ([`limiter`]), source addresses keyed so that one IPv6
//! host cannot pose as many ([`source`]), the per-connection driver that enforces a deadline for
//! the first request bytes, idle and keep-alive limits and a lingering close ([`conn`]), and a
//! request body that must keep arriving ([`body`]).
//!
//! It never decides what a request means and never renders an answer: a refused connection is
//! closed, a body that stalls fails with [`body::BodyTimeout`], and the server maps that to its
//! own error format.

pub mod body;
pub mod conn;
pub mod io;
pub mod limiter;
pub mod source;

pub use body::{BodyTimeout, TimedBody, is_body_timeout};
pub use conn::{ConnectionSettings, serve_connection};
pub use limiter::{ConnectionLimiter, ConnectionPermit, Refused};
pub use source::SourceKey;
