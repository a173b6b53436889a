//! Typed calls to the keysafe API over mutual TLS, to one or several servers. One `KeysafeClient`
//! keeps a connection pool per server; it is cheap to clone.
//!
//! ## Several servers (failover)
//!
//! A client may know several server URLs (active/passive, as KTS deploys them). Every request is
//! described once ([`Req`]) and handed to [`KeysafeClient::send`], the failover loop, which tries
//! servers in order: the configured order, except that a server that failed within the last
//! `reprobe_after` is passed over (tried last) until that time has passed, when it is tried first
//! again. So the client sticks to the server that answered and goes back to an earlier one later.
//! [`KeysafeClient::attempt`] builds and sends every request whose answer is read whole; the
//! two others that talk to a server are `stream_answer` (answers handed over chunk by chunk,
//! tried on the next server only while nothing was sent) and [`KeysafeClient::raw_request`], a
//! diagnostic escape hatch.
//!
//! What is retried, on the same or the next server, after a failure:
//!
//! | failure | idempotent request (GET) | other requests (PUT, POST, DELETE) |
//! |---|---|---|
//! | connect error (refused, unreachable, TLS handshake failed): no byte of the request was sent | yes | yes |
//! | error after the connection was made (reset, timeout, broken answer) | yes | no: it may have been applied |
//! | HTTP 5xx, `sealed`, `unavailable` | yes | no: the server received it |
//! | `503 read_only` (the database is failing over) | yes | no: reported at once with its `Retry-After` (nothing was applied, and every server shares the database) |
//! | any other HTTP error (4xx) | no: the answer stands | no |
//! | the server's key does not match the pin | no: reported at once, never skipped over | no |
//!
//! Only GET is treated as idempotent. A `PUT` of a deposit makes a new version each time;
//! with `If-Match` or `If-None-Match` a repeat would fail with `version_conflict` or
//! `already_exists` although the first attempt succeeded; `DELETE` (a soft delete) repeated fails
//! with `invalid_state`. None of them is retried once it may have reached a server.
//!
//! Retries are bounded: at most `1 + retries` passes over the server list, with exponential backoff
//! and full jitter between passes (`backoff_base * 2^pass`, at most `backoff_max`).
//!
//! ## Where things are
//!
//! This module holds the client itself: its servers, its constructors and accessors. The
//! submodules hold the rest: `options` (configuration), `request` (one request and one attempt),
//! `failover` (the loop and the server order), `server_state` (failures remembered between
//! processes), `stream` (answers handed over in chunks), `race` (every server at once), `status`
//! (health and probes), `identity` (fingerprint, sequenced token, registration), `deposits` and
//! `fetch` (writing and reading deposits), and `sharing`, `groups`, `admin`, `lifecycle` and
//! `audit` (the typed calls of those API areas).

use crate::cache::Cache;
use crate::error::ClientError;
use crate::home::{ClientHome, ClientIdentity};
use crate::tls::{Observed, ServerTrust, client_config};
use keysafe_proto::{ClientFingerprint, HEADER_TOKEN};
use reqwest::{Method, RequestBuilder};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use keysafe_proto::HEADER_ENCODING;

mod admin;
mod audit;
mod deposits;
mod failover;
mod fetch;
mod groups;
mod identity;
mod lifecycle;
mod options;
/// Fetching from every server at once (`get_racing`).
mod race;
mod request;
mod server_state;
mod sharing;
mod status;
mod stream;

pub use deposits::{Precondition, PutParams};
pub use fetch::{CacheUse, Fetched, Source};
pub use options::{ClientOptions, FailoverOptions, ServerSpec};
pub use request::is_retryable;
pub use server_state::SERVER_STATE_FILE;
pub use status::ServerStatus;

pub(crate) use request::{Answer, Req};
use server_state::restore_state;

/// Per-server failure bookkeeping.
#[derive(Debug, Default)]
struct EndpointHealth {
    failed_at: Option<Instant>,
}

struct Endpoint {
    base: String,
    http: reqwest::Client,
    observed: Arc<Mutex<Observed>>,
    pinned: Option<ClientFingerprint>,
    health: Mutex<EndpointHealth>,
}

struct Inner {
    endpoints: Vec<Endpoint>,
    /// Index of the endpoint that answered last (usize::MAX: none yet).
    last: AtomicUsize,
    failover: FailoverOptions,
    cache: Option<Cache>,
    /// The owner part of cache keys: this client's fingerprint.
    me: String,
    /// Where recent server failures are kept between processes (clients made from a home).
    state_file: Option<PathBuf>,
    /// The client's sequenced token (clone detection).
    token: crate::token::TokenKeeper,
}

#[derive(Clone)]
pub struct KeysafeClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeysafeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysafeClient")
            .field("servers", &self.server_urls())
            .field("cache", &self.inner.cache.is_some())
            .finish()
    }
}

fn normalise_base(url: &str) -> Result<String, ClientError> {
    let u = url.trim_end_matches('/');
    if !u.starts_with("https://") {
        return Err(ClientError::Invalid(format!(
            "server URL {url:?} must start with https:// (keysafe has no plaintext listener)"
        )));
    }
    Ok(u.to_owned())
}

/// A random number from the standard library's per-process hasher keys (jitter, temp names).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

impl KeysafeClient {
    /// A client for one server.
    pub fn new(
        server_url: &str,
        identity: Option<&ClientIdentity>,
        trust: &ServerTrust,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        Self::with_servers(
            &[ServerSpec {
                url: server_url.to_owned(),
                trust: trust.clone(),
            }],
            identity,
            options,
            None,
        )
    }

    /// A client for several servers, tried in order, optionally with a local cache.
    pub fn with_servers(
        servers: &[ServerSpec],
        identity: Option<&ClientIdentity>,
        options: &ClientOptions,
        cache: Option<Cache>,
    ) -> Result<Self, ClientError> {
        Self::build(
            servers,
            identity,
            options,
            cache,
            None,
            crate::token::TokenKeeper::in_memory(),
        )
    }

    /// Like [`Self::with_servers`], following the sequenced token kept in a client home (for
    /// programs that talk to other servers than the home lists, with its identity).
    pub fn with_servers_and_home_token(
        servers: &[ServerSpec],
        identity: Option<&ClientIdentity>,
        options: &ClientOptions,
        home_dir: &std::path::Path,
    ) -> Result<Self, ClientError> {
        Self::build(
            servers,
            identity,
            options,
            None,
            None,
            crate::token::TokenKeeper::in_home(home_dir),
        )
    }

    fn build(
        servers: &[ServerSpec],
        identity: Option<&ClientIdentity>,
        options: &ClientOptions,
        cache: Option<Cache>,
        state_file: Option<PathBuf>,
        token: crate::token::TokenKeeper,
    ) -> Result<Self, ClientError> {
        if servers.is_empty() {
            return Err(ClientError::Invalid("no server URL given".into()));
        }
        let mut endpoints = Vec::with_capacity(servers.len());
        for spec in servers {
            let base = normalise_base(&spec.url)?;
            let ident = identity.map(|i| (vec![i.cert.clone()], i.key.clone_key()));
            // One HTTP client per server: each TLS configuration pins that server's key.
            let (tls, observed) = client_config(&spec.trust, ident)?;
            let http = reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .timeout(options.timeout)
                .connect_timeout(options.connect_timeout)
                .pool_max_idle_per_host(options.pool_max_idle_per_host)
                .no_proxy()
                .user_agent(concat!("keysafe-client/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ClientError::Invalid(format!("HTTP client: {e}")))?;
            let pinned = match &spec.trust {
                ServerTrust::Fingerprint(fp) => Some(fp.clone()),
                _ => None,
            };
            endpoints.push(Endpoint {
                base,
                http,
                observed,
                pinned,
                health: Mutex::new(EndpointHealth::default()),
            });
        }
        if let Some(path) = &state_file {
            restore_state(path, &endpoints, options.failover.reprobe_after);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints,
                last: AtomicUsize::new(usize::MAX),
                failover: options.failover.clone(),
                cache,
                me: identity
                    .map(|i| i.fingerprint.as_str().to_owned())
                    .unwrap_or_else(|| "anonymous".into()),
                token,
                state_file,
            }),
        })
    }

    /// A client for a registered home: its identity, its servers, their pins, its cache.
    pub fn from_home(home: &ClientHome) -> Result<Self, ClientError> {
        Self::from_home_with(home, &ClientOptions::default())
    }

    pub fn from_home_with(home: &ClientHome, options: &ClientOptions) -> Result<Self, ClientError> {
        let identity = home.identity()?;
        let mut specs = Vec::with_capacity(home.config.servers.len());
        for url in &home.config.servers {
            specs.push(ServerSpec {
                url: url.clone(),
                trust: home.trust_for(url)?,
            });
        }
        if specs.is_empty() {
            return Err(ClientError::Home("no server configured".into()));
        }
        let cache = if options.use_cache {
            home.cache()
        } else {
            None
        };
        Self::build(
            &specs,
            Some(&identity),
            options,
            cache,
            Some(home.dir.join(SERVER_STATE_FILE)),
            crate::token::TokenKeeper::in_home(&home.dir),
        )
    }

    /// The configured server URLs, in order.
    pub fn server_urls(&self) -> Vec<String> {
        self.inner
            .endpoints
            .iter()
            .map(|e| e.base.clone())
            .collect()
    }

    /// The server that answered last, or else the first one configured.
    pub fn base_url(&self) -> &str {
        &self.current().base
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.inner.cache.as_ref()
    }

    fn current(&self) -> &Endpoint {
        // `with_servers` refuses an empty list, so index 0 exists.
        let i = self.inner.last.load(Ordering::Relaxed);
        &self.inner.endpoints[i.min(self.inner.endpoints.len() - 1)]
    }

    /// The fingerprint the server presented in the last handshake (of the current server).
    pub fn observed_server_fingerprint(&self) -> Option<ClientFingerprint> {
        self.current()
            .observed
            .lock()
            .ok()
            .and_then(|o| o.fingerprint.clone())
    }

    /// A low-level request to the current server on its connection pool and identity, for
    /// callers that need something the typed methods do not offer (tests, diagnostics). It
    /// bypasses failover (and anything else [`Self::attempt`] adds).
    pub fn raw_request(&self, method: Method, path: &str) -> RequestBuilder {
        let ep = self.current();
        let rb = ep.http.request(method, format!("{}{path}", ep.base));
        // Authenticated routes need the sequenced token; a new one in the answer is the
        // caller's to hand back with `offer_token`.
        match self.token_header() {
            Some(v) => rb.header(HEADER_TOKEN, v),
            None => rb,
        }
    }
}
