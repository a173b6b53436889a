//! How a client is configured: the servers it talks to and how each is trusted, timeouts and
//! connection pooling, and the failover and retry tuning. Plain data, read by the constructors
//! in the parent module.

use crate::tls::ServerTrust;
use std::time::Duration;

/// Failover and retry tuning.
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// Extra passes over the server list after the first (idempotent requests, or requests that
    /// certainly were not sent).
    pub retries: u32,
    /// Backoff before the second pass; doubled for each further pass, with full jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A server that failed is tried last until this long after its failure.
    pub reprobe_after: Duration,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        Self {
            retries: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            reprobe_after: Duration::from_secs(30),
        }
    }
}

/// Options for building a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Idle connections kept per host (the load generator uses 1 to pin one connection each).
    pub pool_max_idle_per_host: usize,
    pub failover: FailoverOptions,
    /// Use the home's local cache (`[cache]` in client.toml) for `get`. Only clients made from a
    /// home have a cache.
    pub use_cache: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            pool_max_idle_per_host: 8,
            failover: FailoverOptions::default(),
            use_cache: true,
        }
    }
}

/// One server to talk to and how to trust it.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub url: String,
    pub trust: ServerTrust,
}
