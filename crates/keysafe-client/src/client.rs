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
//! [`KeysafeClient::attempt`] is the one place an HTTP request is built and sent; nothing else
//! talks to a server (except [`KeysafeClient::raw_request`], a diagnostic escape hatch).
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

use crate::cache::{Cache, CacheKey, CacheMode};
use crate::error::ClientError;
use crate::home::{ClientHome, ClientIdentity};
use crate::tls::{Observed, ServerTrust, client_config};
use bytes::Bytes;
use keysafe_proto::GroupName;
use keysafe_proto::api::{
    Acl, AclUpdate, ClientInfo, ClientList, DepositInfo, DepositList, DisableUnactivatedRequest,
    Encoding, GroupAddMember, GroupAdmitRequest, GroupCreateRequest, GroupInfo, GroupKeys,
    GroupList, GroupRemoveMember, Health, ListQuery, OrgCreateRequest, OrgCreated, OrgList,
    OrgSetAuthRequest, OrgSetAuthResponse, PurgeResponse, PutResponse, RecipientInfo,
    RegisterRequest, RegistrationToken, RegistrationTokenRequest, SharedList, VersionList,
};
use keysafe_proto::{
    ClientFingerprint, DepositName, DepositVersion, ErrorBody, HEADER_ACL_SERIAL,
    HEADER_DEPOSIT_VERSION, HEADER_TOKEN, OrgName,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use keysafe_proto::HEADER_ENCODING;

/// Fetching from every server at once (`get_racing`).
mod lifecycle;
mod race;

/// A write precondition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// Only if the current version is this one (`If-Match`).
    IfMatch(DepositVersion),
    /// Only if the deposit does not exist yet (`If-None-Match: *`).
    IfAbsent,
}

/// Where a fetched deposit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A server answered with the payload.
    Server,
    /// A server confirmed that the cached copy is current (`304 Not Modified`); the payload came
    /// from the local cache.
    Validated,
    /// The local cache, within its time-to-live (`ttl` mode only); no request was made.
    Cache { age: Duration },
    /// The local cache, older than the time-to-live, because no server could answer. `reason` is
    /// that failure. Callers should say so (the CLI warns on stderr).
    Stale { age: Duration, reason: String },
}

/// A fetched deposit version.
pub struct Fetched {
    pub version: DepositVersion,
    pub payload: Bytes,
    /// The `x-keysafe-encoding` header, if the server sent one.
    pub encoding: Option<String>,
    /// The ACL serial the server reported (absent for copies no server confirmed just now).
    pub acl_serial: Option<u64>,
    pub source: Source,
}

/// How a put is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutParams {
    pub precondition: Precondition,
    pub encoding: Encoding,
    /// The ACL serial the payload was encrypted for (a changed ACL is a conflict).
    pub acl_serial: Option<u64>,
}

impl Default for PutParams {
    fn default() -> Self {
        Self {
            precondition: Precondition::None,
            encoding: Encoding::Raw,
            acl_serial: None,
        }
    }
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("version", &self.version)
            .field(
                "payload",
                &format_args!("[{} bytes redacted]", self.payload.len()),
            )
            .field("encoding", &self.encoding)
            .field("source", &self.source)
            .finish()
    }
}

/// How a `get` may use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheUse {
    /// As `[cache]` says: revalidate (or, in `ttl` mode, answer from a fresh entry), and fall
    /// back to a stale entry when no server answers.
    #[default]
    Normal,
    /// Always ask a server and never serve a cached copy; a successful answer refreshes the
    /// entry (`keysafe get --no-cache`).
    Refresh,
}

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

/// What [`KeysafeClient::probe`] found out about one server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub url: String,
    /// It completed a TLS handshake and answered `/v1/health` (any status).
    pub answers: bool,
    /// Its health status (`ok`, `sealed`, `database_unavailable`), when it answered.
    pub health: Option<String>,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
    /// The fingerprint pinned for it (absent when trusted through a CA certificate).
    pub pinned: Option<String>,
    /// The fingerprint it presented.
    pub presented: Option<String>,
    /// `Some(true)` when the presented key is the pinned one.
    pub fingerprint_matches: Option<bool>,
    /// The client passes it over for now because it failed recently.
    pub marked_down: bool,
}

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

/// The file in a client home that remembers recent server failures, so that the next process
/// (every CLI command is one) starts with the server that answered instead of one that just
/// failed. Only URLs and times; mode 0600.
pub const SERVER_STATE_FILE: &str = "server-state.json";

#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct PersistedState {
    /// URL -> when it last failed, in milliseconds since the Unix epoch.
    failed_at: BTreeMap<String, u64>,
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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

/// Whether a request may be repeated after it may have reached a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Safe to repeat: retried on any connection failure and on 5xx.
    Idempotent,
    /// Retried (elsewhere) only when no byte of it was sent.
    OnlyIfNotSent,
}

/// One API request, independent of the server it goes to.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    method: Method,
    /// Path and query string, starting with `/`.
    path: String,
    headers: HeaderMap,
    body: Option<Bytes>,
    retry: Retry,
    /// Return non-2xx answers as they are instead of as errors (health).
    any_status: bool,
    /// Return `304 Not Modified` as an answer (conditional deposit reads).
    not_modified_ok: bool,
}

impl Req {
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Self {
        let retry = if method == Method::GET || method == Method::HEAD {
            Retry::Idempotent
        } else {
            Retry::OnlyIfNotSent
        };
        Self {
            method,
            path: path.into(),
            headers: HeaderMap::new(),
            body: None,
            retry,
            any_status: false,
            not_modified_ok: false,
        }
    }

    pub(crate) fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    pub(crate) fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }

    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub(crate) fn body(mut self, content_type: &'static str, body: Bytes) -> Self {
        self.headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        self.body = Some(body);
        self
    }

    pub(crate) fn json<T: Serialize>(self, v: &T) -> Result<Self, ClientError> {
        let body = serde_json::to_vec(v)
            .map_err(|e| ClientError::Invalid(format!("cannot encode the request: {e}")))?;
        Ok(self.body("application/json", body.into()))
    }

    /// Appends a query string built from a serialisable value (a struct of optional fields or
    /// a list of pairs); absent fields are left out.
    pub(crate) fn query<T: Serialize>(mut self, q: &T) -> Result<Self, ClientError> {
        let v = serde_json::to_value(q)
            .map_err(|e| ClientError::Invalid(format!("cannot encode the query: {e}")))?;
        let pairs: Vec<(String, String)> = match v {
            serde_json::Value::Object(m) => m
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
            serde_json::Value::Array(items) => items
                .into_iter()
                .filter_map(|p| match p {
                    serde_json::Value::Array(kv) if kv.len() == 2 => Some((
                        kv[0].as_str().unwrap_or_default().to_owned(),
                        kv[1].as_str().unwrap_or_default().to_owned(),
                    )),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut out = String::new();
        for (k, v) in pairs {
            out.push(if out.is_empty() && !self.path.contains('?') {
                '?'
            } else {
                '&'
            });
            out.push_str(&percent_encode(&k));
            out.push('=');
            out.push_str(&percent_encode(&v));
        }
        self.path.push_str(&out);
        Ok(self)
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A complete answer: status, headers and the whole body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// How one attempt failed.
enum AttemptError {
    /// Nothing was sent: safe to try elsewhere whatever the request.
    NotSent(ClientError),
    /// The connection broke or timed out after it was made: the request may have been applied.
    MaybeSent(ClientError),
    /// The server answered 5xx (or `sealed`/`unavailable`): it received the request.
    ServerError(ClientError),
    /// An answer that stands (4xx), or a security failure: no retry, no failover.
    Final(ClientError),
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

    /// This client's own fingerprint (`None` for an anonymous client).
    pub fn own_fingerprint(&self) -> Option<ClientFingerprint> {
        ClientFingerprint::parse(&self.inner.me).ok()
    }

    /// The `x-keysafe-token` value to send, if this client holds a token.
    fn token_header(&self) -> Option<HeaderValue> {
        let t = self.inner.token.current()?;
        HeaderValue::from_str(&t).ok()
    }

    /// The sequenced token this client holds (to hand to another keeper).
    pub fn current_token(&self) -> Option<zeroize::Zeroizing<String>> {
        self.inner.token.current()
    }

    /// The counter of the sequenced token this client holds.
    pub fn token_counter(&self) -> Option<u64> {
        self.inner.token.counter()
    }

    /// Takes a sequenced token (registration stores the first one this way).
    pub fn offer_token(&self, token: &str) -> Result<(), ClientError> {
        self.inner.token.offer(token)
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

    /// The order to try servers in: those not marked down, in the configured order, then those
    /// marked down (oldest failure first).
    fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let reprobe = self.inner.failover.reprobe_after;
        let mut up = Vec::new();
        let mut down = Vec::new();
        for (i, ep) in self.inner.endpoints.iter().enumerate() {
            let failed_at = ep.health.lock().ok().and_then(|h| h.failed_at);
            match failed_at {
                Some(t) if now.duration_since(t) < reprobe => down.push((t, i)),
                _ => up.push(i),
            }
        }
        down.sort();
        up.extend(down.into_iter().map(|(_, i)| i));
        up
    }

    fn mark(&self, i: usize, ok: bool) {
        let mut changed = false;
        if let Some(ep) = self.inner.endpoints.get(i)
            && let Ok(mut h) = ep.health.lock()
        {
            changed = !ok || h.failed_at.is_some();
            h.failed_at = if ok { None } else { Some(Instant::now()) };
        }
        if ok {
            self.inner.last.store(i, Ordering::Relaxed);
        }
        if changed && let Some(path) = &self.inner.state_file {
            self.save_state(path);
        }
    }

    /// Best effort: a failure to write only costs the next process a retry.
    fn save_state(&self, path: &std::path::Path) {
        let now_ms = unix_millis();
        let mut state = PersistedState::default();
        for ep in &self.inner.endpoints {
            if let Some(t) = ep.health.lock().ok().and_then(|h| h.failed_at) {
                let ago = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
                state
                    .failed_at
                    .insert(ep.base.clone(), now_ms.saturating_sub(ago));
            }
        }
        let Ok(text) = serde_json::to_vec(&state) else {
            return;
        };
        if let Err(e) = crate::home::replace_private_file(path, &[&text]) {
            tracing::debug!(error = %e, path = %path.display(), "cannot save server state");
        }
    }

    fn backoff(&self, pass: u32) -> Duration {
        let f = &self.inner.failover;
        let cap = f
            .backoff_base
            .saturating_mul(1u32 << pass.min(16))
            .min(f.backoff_max);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(random_u64() % (millis + 1))
    }

    /// The failover loop: every API request goes through here (see the module documentation).
    pub(crate) async fn send(&self, req: Req) -> Result<Answer, ClientError> {
        let order = self.order();
        let passes = 1 + self.inner.failover.retries;
        // The last failure per server, in the order first tried.
        let mut tried: Vec<(usize, String)> = Vec::new();
        let mut last: Option<ClientError> = None;
        let mut not_retried = false;
        let record = |tried: &mut Vec<(usize, String)>, i: usize, e: &ClientError| {
            let msg = e.to_string();
            match tried.iter_mut().find(|(j, _)| *j == i) {
                Some(slot) => slot.1 = msg,
                None => tried.push((i, msg)),
            }
        };
        'passes: for pass in 0..passes {
            if pass > 0 {
                tokio::time::sleep(self.backoff(pass - 1)).await;
            }
            for &i in &order {
                match self.attempt(i, &req).await {
                    Ok(answer) => {
                        self.mark(i, true);
                        return Ok(answer);
                    }
                    Err(AttemptError::Final(e)) => {
                        if !matches!(e, ClientError::FingerprintMismatch { .. }) {
                            self.mark(i, true);
                        }
                        return Err(e);
                    }
                    Err(AttemptError::NotSent(e)) => {
                        self.mark(i, false);
                        record(&mut tried, i, &e);
                        last = Some(e);
                    }
                    Err(AttemptError::MaybeSent(e) | AttemptError::ServerError(e)) => {
                        self.mark(i, false);
                        record(&mut tried, i, &e);
                        last = Some(e);
                        if req.retry != Retry::Idempotent {
                            not_retried = true;
                            break 'passes;
                        }
                    }
                }
            }
        }
        let last = last.unwrap_or_else(|| ClientError::Invalid("no server to try".into()));
        if self.inner.endpoints.len() <= 1 {
            return Err(last);
        }
        Err(ClientError::AllServersFailed {
            tried: tried
                .into_iter()
                .map(|(i, msg)| {
                    let url = &self.inner.endpoints[i].base;
                    if msg.contains(url.as_str()) {
                        msg
                    } else {
                        format!("{url}: {msg}")
                    }
                })
                .collect(),
            last: Box::new(last),
            not_retried,
        })
    }

    /// One attempt of one request against one server: the only place a request is built and
    /// sent, and an answer read.
    async fn attempt(&self, i: usize, req: &Req) -> Result<Answer, AttemptError> {
        let ep = &self.inner.endpoints[i];
        let mut rb = ep
            .http
            .request(req.method.clone(), format!("{}{}", ep.base, req.path))
            .headers(req.headers.clone());
        if req.path != "/v1/health"
            && let Some(v) = self.token_header()
        {
            rb = rb.header(HEADER_TOKEN, v);
        }
        if let Some(body) = &req.body {
            rb = rb.body(body.clone());
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => return Err(transport_error(ep, e)),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        if let Some(t) = headers.get(HEADER_TOKEN).and_then(|v| v.to_str().ok())
            && let Err(e) = self.inner.token.offer(t)
        {
            // The request itself succeeded; losing the token would lock this client out later.
            tracing::error!(error = %e, "cannot store the new sequenced token");
        }
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(transport_error(ep, e)),
        };
        let answer = Answer {
            status,
            headers,
            body,
        };
        if status.is_success()
            || req.any_status
            || (req.not_modified_ok && status == StatusCode::NOT_MODIFIED)
        {
            return Ok(answer);
        }
        let e = api_error(&answer);
        if req.retry != Retry::Idempotent && e.code() == Some(keysafe_proto::ErrorCode::ReadOnly) {
            // Refused before anything changed, and every server shares the database that
            // refuses writes: reported as it is (with when to retry), not tried elsewhere.
            Err(AttemptError::Final(e))
        } else if is_retryable(&e) {
            Err(AttemptError::ServerError(e))
        } else {
            Err(AttemptError::Final(e))
        }
    }

    /// Sends a request whose answer may be large and hands its body, chunk by chunk, to
    /// `each` as it arrives (never whole in memory). Tried on the servers in order while
    /// nothing was sent; once sent, never repeated. `timeout` bounds the whole exchange.
    /// Answers how many body bytes were handed over.
    pub(crate) async fn stream_answer(
        &self,
        req: Req,
        timeout: Duration,
        mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ClientError> {
        let mut last = None;
        for i in self.order() {
            let ep = &self.inner.endpoints[i];
            let mut rb = ep
                .http
                .request(req.method.clone(), format!("{}{}", ep.base, req.path))
                .headers(req.headers.clone())
                .timeout(timeout);
            if let Some(v) = self.token_header() {
                rb = rb.header(HEADER_TOKEN, v);
            }
            if let Some(body) = &req.body {
                rb = rb.body(body.clone());
            }
            let mut resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => match transport_error(ep, e) {
                    AttemptError::NotSent(e) => {
                        self.mark(i, false);
                        last = Some(e);
                        continue;
                    }
                    AttemptError::MaybeSent(e)
                    | AttemptError::ServerError(e)
                    | AttemptError::Final(e) => return Err(e),
                },
            };
            self.mark(i, true);
            if let Some(t) = resp
                .headers()
                .get(HEADER_TOKEN)
                .and_then(|v| v.to_str().ok())
                && let Err(e) = self.inner.token.offer(t)
            {
                tracing::error!(error = %e, "cannot store the new sequenced token");
            }
            let status = resp.status();
            if !status.is_success() {
                let headers = resp.headers().clone();
                let body = resp.bytes().await.unwrap_or_default();
                return Err(api_error(&Answer {
                    status,
                    headers,
                    body,
                }));
            }
            let mut n = 0u64;
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        each(&chunk).map_err(|e| ClientError::Invalid(e.to_string()))?;
                        n += chunk.len() as u64;
                    }
                    Ok(None) => return Ok(n),
                    Err(e) => {
                        return Err(match transport_error(ep, e) {
                            AttemptError::NotSent(e)
                            | AttemptError::MaybeSent(e)
                            | AttemptError::ServerError(e)
                            | AttemptError::Final(e) => e,
                        });
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Invalid("no server to try".into())))
    }

    pub(crate) async fn json<T: DeserializeOwned>(&self, req: Req) -> Result<T, ClientError> {
        let answer = self.send(req).await?;
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Unexpected {
            status: answer.status.as_u16(),
            detail: format!("invalid JSON: {e}"),
        })
    }

    /// `GET /v1/health` on the first server that answers (any status: a sealed server answers
    /// 503 with the same shape).
    pub async fn health(&self) -> Result<Health, ClientError> {
        let mut req = Req::get("/v1/health");
        req.any_status = true;
        let answer = self.send(req).await?;
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Unexpected {
            status: answer.status.as_u16(),
            detail: format!("invalid health answer: {e}"),
        })
    }

    /// Asks every server for its health, one after the other, without retries: for
    /// `keysafe status`. Also updates which servers are considered down.
    pub async fn probe(&self) -> Vec<ServerStatus> {
        let mut out = Vec::with_capacity(self.inner.endpoints.len());
        for (i, ep) in self.inner.endpoints.iter().enumerate() {
            let mut req = Req::get("/v1/health");
            req.any_status = true;
            let started = Instant::now();
            let result = self.attempt(i, &req).await;
            let latency = started.elapsed().as_secs_f64() * 1000.0;
            let presented = ep.observed.lock().ok().and_then(|o| o.fingerprint.clone());
            let pinned = ep.pinned.clone();
            let mut st = ServerStatus {
                url: ep.base.clone(),
                answers: false,
                health: None,
                latency_ms: None,
                error: None,
                pinned: pinned.as_ref().map(|p| p.as_str().to_owned()),
                presented: presented.as_ref().map(|p| p.as_str().to_owned()),
                fingerprint_matches: match (&pinned, &presented) {
                    (Some(p), Some(s)) => Some(p == s),
                    _ => None,
                },
                marked_down: false,
            };
            match result {
                Ok(answer) => {
                    st.answers = true;
                    st.latency_ms = Some(latency);
                    let health = serde_json::from_slice::<Health>(&answer.body)
                        .map(|h| h.status)
                        .unwrap_or_else(|_| format!("HTTP {}", answer.status.as_u16()));
                    let ok = answer.status.is_success();
                    self.mark(i, ok);
                    st.health = Some(health);
                }
                Err(
                    AttemptError::NotSent(e)
                    | AttemptError::MaybeSent(e)
                    | AttemptError::ServerError(e)
                    | AttemptError::Final(e),
                ) => {
                    self.mark(i, false);
                    st.error = Some(e.to_string());
                }
            }
            out.push(st);
        }
        for (st, ep) in out.iter_mut().zip(&self.inner.endpoints) {
            st.marked_down = ep.health.lock().ok().and_then(|h| h.failed_at).is_some();
        }
        out
    }

    /// The server the next request would go to first.
    pub fn preferred_server(&self) -> String {
        self.order()
            .first()
            .map(|&i| self.inner.endpoints[i].base.clone())
            .unwrap_or_default()
    }

    /// `GET /?a=fingerprint`.
    pub async fn server_fingerprint(&self) -> Result<ClientFingerprint, ClientError> {
        let answer = self.send(Req::get("/?a=fingerprint")).await?;
        let text = String::from_utf8_lossy(&answer.body);
        ClientFingerprint::parse(&text).map_err(|e| ClientError::Unexpected {
            status: 200,
            detail: e.to_string(),
        })
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<ClientInfo, ClientError> {
        self.json(Req::post("/v1/register").json(req)?).await
    }

    pub async fn whoami(&self) -> Result<ClientInfo, ClientError> {
        self.json(Req::get("/v1/whoami")).await
    }

    fn invalidate(&self, owner: Option<&str>, name: &DepositName) {
        if let Some(cache) = &self.inner.cache
            && let Err(e) = cache.invalidate(owner.unwrap_or(&self.inner.me), name.as_str())
        {
            tracing::warn!(error = %e, "cannot drop a cache entry");
        }
    }

    /// A write to a deposit: its cache entries are dropped before as well as after, so that if
    /// the outcome is unknown no old copy stays fresh.
    async fn write_json<T: DeserializeOwned>(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        req: Req,
    ) -> Result<T, ClientError> {
        self.invalidate(owner, name);
        let r = self.json(req).await;
        self.invalidate(owner, name);
        r
    }

    /// `?owner=` for a deposit of another principal (none for the caller's own).
    fn deposit_path(owner: Option<&str>, name: &DepositName, op: &str) -> String {
        let mut p = format!("/v1/deposits/{name}{op}");
        if let Some(o) = owner {
            p.push_str("?owner=");
            p.push_str(&percent_encode(o));
        }
        p
    }

    pub async fn put(
        &self,
        name: &DepositName,
        payload: impl Into<Bytes>,
        pre: Precondition,
    ) -> Result<PutResponse, ClientError> {
        self.put_with(
            None,
            name,
            payload,
            PutParams {
                precondition: pre,
                ..PutParams::default()
            },
        )
        .await
    }

    /// Stores a new version of the caller's deposit or (`owner`) of one it may write.
    pub async fn put_with(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        payload: impl Into<Bytes>,
        params: PutParams,
    ) -> Result<PutResponse, ClientError> {
        let mut req = Req::new(Method::PUT, Self::deposit_path(owner, name, ""))
            .body("application/octet-stream", payload.into())
            .header(
                HeaderName::from_static(HEADER_ENCODING),
                HeaderValue::from_static(params.encoding.as_str()),
            );
        if let Some(serial) = params.acl_serial {
            req = req.header(
                HeaderName::from_static(HEADER_ACL_SERIAL),
                HeaderValue::from(serial),
            );
        }
        req = match params.precondition {
            Precondition::None => req,
            Precondition::IfMatch(v) => req.header(
                reqwest::header::IF_MATCH,
                HeaderValue::from_str(&format!("\"{v}\""))
                    .map_err(|e| ClientError::Invalid(e.to_string()))?,
            ),
            Precondition::IfAbsent => req.header(
                reqwest::header::IF_NONE_MATCH,
                HeaderValue::from_static("*"),
            ),
        };
        self.write_json(owner, name, req).await
    }

    /// Fetches a deposit version through the cache (see [`crate::cache`]).
    pub async fn get(
        &self,
        name: &DepositName,
        version: Option<DepositVersion>,
    ) -> Result<Fetched, ClientError> {
        self.get_with(name, version, CacheUse::Normal).await
    }

    pub async fn get_with(
        &self,
        name: &DepositName,
        version: Option<DepositVersion>,
        cache_use: CacheUse,
    ) -> Result<Fetched, ClientError> {
        self.get_of(None, name, version, cache_use).await
    }

    /// Fetches a version of the caller's deposit or (`owner`) of one shared with it, through
    /// the cache (see [`crate::cache`] for the rules).
    pub async fn get_of(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        version: Option<DepositVersion>,
        cache_use: CacheUse,
    ) -> Result<Fetched, ClientError> {
        let cache = self.inner.cache.as_ref().filter(|c| c.config.enabled);
        let key = CacheKey {
            owner: owner.unwrap_or(&self.inner.me),
            name: name.as_str(),
            version,
        };
        let cached = match (cache, cache_use) {
            (Some(c), CacheUse::Normal) => c.lookup(&key),
            _ => None,
        };
        if let (Some(c), Some(e)) = (cache, &cached)
            && c.config.mode == CacheMode::Ttl
            && e.age <= c.config.ttl
            && let Some(f) = from_cache(e, Source::Cache { age: e.age }, None)
        {
            return Ok(f);
        }
        // Only a tag of the server's own form is sent back: a damaged or edited entry makes an
        // unconditional request rather than a malformed header the server would refuse.
        let known = cached
            .as_ref()
            .and_then(|e| e.meta.etag.as_deref())
            .filter(|t| plausible_etag(t));
        let answer = match self.fetch(owner, name, version, known).await {
            // A 304 for a copy other than the one named (a server bug): ask again in full.
            Ok(FetchAnswer::NotModified {
                version: v, etag, ..
            }) if cached.as_ref().is_none_or(|e| {
                e.meta.etag.as_deref() != Some(etag.as_str()) || e.meta.version != v.get()
            }) =>
            {
                tracing::warn!(%etag, "not-modified answer for a copy not held; fetching in full");
                self.fetch(owner, name, version, None).await
            }
            other => other,
        };
        match answer {
            Ok(FetchAnswer::Full(f, etag)) => {
                if let Some(c) = cache
                    && let Err(e) = c.store(
                        &key,
                        f.version,
                        f.encoding.as_deref(),
                        etag.as_deref(),
                        &f.payload,
                    )
                {
                    tracing::warn!(error = %e, "cannot cache a fetched deposit");
                }
                Ok(f)
            }
            Ok(FetchAnswer::NotModified {
                version: v,
                etag,
                acl_serial,
            }) => {
                // Only sent with an entry's tag, and checked above: the server confirmed
                // exactly that entry.
                match (cache, &cached) {
                    (Some(c), Some(e))
                        if e.meta.etag.as_deref() == Some(etag.as_str())
                            && e.meta.version == v.get() =>
                    {
                        c.confirm(&key);
                        from_cache(e, Source::Validated, acl_serial).ok_or_else(|| {
                            ClientError::Home("cache: a damaged entry was confirmed".into())
                        })
                    }
                    _ => Err(ClientError::Unexpected {
                        status: 304,
                        detail: format!(
                            "not modified twice, for a copy this client does not hold ({etag})"
                        ),
                    }),
                }
            }
            Err(err) => {
                if let (Some(c), Some(e)) = (cache, &cached)
                    && is_retryable(&err)
                {
                    if e.age <= c.config.max_stale
                        && let Some(f) = from_cache(
                            e,
                            Source::Stale {
                                age: e.age,
                                reason: err.to_string(),
                            },
                            None,
                        )
                    {
                        return Ok(f);
                    }
                    return Err(ClientError::CacheTooOld {
                        age: e.age,
                        max_stale: c.config.max_stale,
                        cause: Box::new(err),
                    });
                }
                // A refusal that stands (not found, deleted, forbidden, client disabled, ...)
                // also drops what this host kept of the name.
                if err.code().is_some() && !is_retryable(&err) {
                    self.invalidate(owner, name);
                }
                Err(err)
            }
        }
    }

    /// One GET of a deposit version; with `known` (an entity tag this client holds) a
    /// conditional one.
    async fn fetch(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        version: Option<DepositVersion>,
        known: Option<&str>,
    ) -> Result<FetchAnswer, ClientError> {
        let mut path = Self::deposit_path(owner, name, "");
        if let Some(v) = version {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&format!("version={v}"));
        }
        let mut req = Req::get(path);
        if let Some(tag) = known
            && let Ok(v) = HeaderValue::from_str(&format!("\"{tag}\""))
        {
            req = req.header(reqwest::header::IF_NONE_MATCH, v);
            req.not_modified_ok = true;
        }
        let answer = self.send(req).await?;
        let version = answer
            .headers
            .get(HEADER_DEPOSIT_VERSION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DepositVersion::parse(v).ok())
            .ok_or_else(|| ClientError::Unexpected {
                status: answer.status.as_u16(),
                detail: format!("missing {HEADER_DEPOSIT_VERSION} header"),
            })?;
        let etag = answer
            .headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
            .map(str::to_owned);
        let acl_serial = answer
            .headers
            .get(HEADER_ACL_SERIAL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if answer.status == StatusCode::NOT_MODIFIED {
            let etag = etag.ok_or_else(|| ClientError::Unexpected {
                status: 304,
                detail: "not modified, without an ETag".into(),
            })?;
            return Ok(FetchAnswer::NotModified {
                version,
                etag,
                acl_serial,
            });
        }
        let encoding = answer
            .headers
            .get(HEADER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(FetchAnswer::Full(
            Fetched {
                version,
                payload: answer.body,
                encoding,
                acl_serial,
                source: Source::Server,
            },
            etag,
        ))
    }

    pub async fn list(&self, q: &ListQuery) -> Result<DepositList, ClientError> {
        self.json(Req::get("/v1/deposits").query(q)?).await
    }

    pub async fn versions(&self, name: &DepositName) -> Result<VersionList, ClientError> {
        self.versions_of(None, name).await
    }

    pub async fn versions_of(
        &self,
        owner: Option<&str>,
        name: &DepositName,
    ) -> Result<VersionList, ClientError> {
        self.json(Req::get(Self::deposit_path(owner, name, ":versions")))
            .await
    }

    pub async fn delete(&self, name: &DepositName) -> Result<DepositInfo, ClientError> {
        self.delete_of(None, name).await
    }

    pub async fn delete_of(
        &self,
        owner: Option<&str>,
        name: &DepositName,
    ) -> Result<DepositInfo, ClientError> {
        self.write_json(
            owner,
            name,
            Req::new(Method::DELETE, Self::deposit_path(owner, name, "")),
        )
        .await
    }

    pub async fn undelete(&self, name: &DepositName) -> Result<DepositInfo, ClientError> {
        self.undelete_of(None, name).await
    }

    pub async fn undelete_of(
        &self,
        owner: Option<&str>,
        name: &DepositName,
    ) -> Result<DepositInfo, ClientError> {
        self.write_json(
            owner,
            name,
            Req::post(Self::deposit_path(owner, name, ":undelete")),
        )
        .await
    }

    pub async fn purge(&self, name: &DepositName) -> Result<PurgeResponse, ClientError> {
        self.purge_of(None, name).await
    }

    pub async fn purge_of(
        &self,
        owner: Option<&str>,
        name: &DepositName,
    ) -> Result<PurgeResponse, ClientError> {
        self.write_json(
            owner,
            name,
            Req::post(Self::deposit_path(owner, name, ":purge")),
        )
        .await
    }

    /// The ACL of a deposit and the recipients a new version must be encrypted to.
    pub async fn acl(&self, owner: Option<&str>, name: &DepositName) -> Result<Acl, ClientError> {
        self.json(Req::get(Self::deposit_path(owner, name, ":acl")))
            .await
    }

    /// Changes an ACL with the re-encrypted versions (see the `vault` module).
    pub async fn update_acl(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        update: &AclUpdate,
    ) -> Result<Acl, ClientError> {
        self.write_json(
            owner,
            name,
            Req::post(Self::deposit_path(owner, name, ":share")).json(update)?,
        )
        .await
    }

    /// Deposits others shared with this client or its groups.
    pub async fn shared(&self) -> Result<SharedList, ClientError> {
        self.json(Req::get("/v1/shared")).await
    }

    /// The age recipient of a client (fingerprint) or `group:NAME` of this organisation.
    pub async fn recipient(&self, principal: &str) -> Result<RecipientInfo, ClientError> {
        self.json(Req::get("/v1/recipients").query(&[("principal", principal)])?)
            .await
    }

    pub async fn groups(&self) -> Result<GroupList, ClientError> {
        self.json(Req::get("/v1/groups")).await
    }

    pub async fn create_group(&self, req: &GroupCreateRequest) -> Result<GroupInfo, ClientError> {
        self.json(Req::post("/v1/groups").json(req)?).await
    }

    pub async fn group(&self, name: &GroupName) -> Result<GroupInfo, ClientError> {
        self.json(Req::get(format!("/v1/groups/{name}"))).await
    }

    pub async fn group_keys(&self, name: &GroupName) -> Result<GroupKeys, ClientError> {
        self.json(Req::get(format!("/v1/groups/{name}/keys"))).await
    }

    pub async fn admit(
        &self,
        name: &GroupName,
        req: &GroupAdmitRequest,
    ) -> Result<GroupInfo, ClientError> {
        self.json(Req::post(format!("/v1/groups/{name}/admit")).json(req)?)
            .await
    }

    pub async fn admin_groups(&self, org: Option<&OrgName>) -> Result<GroupList, ClientError> {
        let mut req = Req::get("/v1/admin/groups");
        if let Some(o) = org {
            req = req.query(&[("org", o.as_str())])?;
        }
        self.json(req).await
    }

    pub async fn admin_create_group(
        &self,
        req: &GroupCreateRequest,
    ) -> Result<GroupInfo, ClientError> {
        self.json(Req::post("/v1/admin/groups").json(req)?).await
    }

    pub async fn admin_group(
        &self,
        org: &OrgName,
        name: &GroupName,
    ) -> Result<GroupInfo, ClientError> {
        self.json(Req::get(format!("/v1/admin/groups/{org}/{name}")))
            .await
    }

    pub async fn admin_add_member(
        &self,
        org: &OrgName,
        name: &GroupName,
        member: &ClientFingerprint,
    ) -> Result<GroupInfo, ClientError> {
        self.json(
            Req::post(format!("/v1/admin/groups/{org}/{name}/add-member")).json(
                &GroupAddMember {
                    member: member.clone(),
                },
            )?,
        )
        .await
    }

    pub async fn admin_remove_member(
        &self,
        org: &OrgName,
        name: &GroupName,
        req: &GroupRemoveMember,
    ) -> Result<GroupInfo, ClientError> {
        self.json(Req::post(format!("/v1/admin/groups/{org}/{name}/remove-member")).json(req)?)
            .await
    }

    pub async fn mint_registration_token(
        &self,
        org: &OrgName,
        ttl_seconds: Option<u64>,
    ) -> Result<RegistrationToken, ClientError> {
        self.json(
            Req::post(format!("/v1/admin/orgs/{org}/tokens"))
                .json(&RegistrationTokenRequest { ttl_seconds })?,
        )
        .await
    }

    pub async fn disable_unactivated(
        &self,
        older_than_seconds: u64,
    ) -> Result<ClientList, ClientError> {
        self.json(Req::post("/v1/admin/clients/disable-unactivated").json(
            &DisableUnactivatedRequest {
                older_than_seconds,
                dry_run: false,
            },
        )?)
        .await
    }

    pub async fn create_org(&self, req: &OrgCreateRequest) -> Result<OrgCreated, ClientError> {
        self.json(Req::post("/v1/admin/orgs").json(req)?).await
    }

    pub async fn list_orgs(&self) -> Result<OrgList, ClientError> {
        self.json(Req::get("/v1/admin/orgs")).await
    }

    pub async fn set_org_auth(
        &self,
        org: &OrgName,
        req: &OrgSetAuthRequest,
    ) -> Result<OrgSetAuthResponse, ClientError> {
        self.json(Req::new(Method::PUT, format!("/v1/admin/orgs/{org}/auth")).json(req)?)
            .await
    }

    // ---- audit trail ----

    /// `GET /v1/audit/public-key`: the key that signs audit checkpoints.
    pub async fn audit_public_key(
        &self,
    ) -> Result<keysafe_proto::audit::AuditPublicKey, ClientError> {
        self.json(Req::get("/v1/audit/public-key")).await
    }

    /// A page of audit entries from `from` (and not older than `since`, RFC 3339).
    pub async fn audit_entries(
        &self,
        from: u64,
        since: Option<&str>,
        limit: u32,
    ) -> Result<keysafe_proto::audit::AuditPage, ClientError> {
        let from = from.to_string();
        let limit = limit.to_string();
        let mut q: Vec<(&str, &str)> = vec![("from", &from), ("limit", &limit)];
        if let Some(s) = since {
            q.push(("since", s));
        }
        self.json(Req::get("/v1/admin/audit/entries").query(&q)?)
            .await
    }

    /// Every audit checkpoint at or after `from`.
    pub async fn audit_checkpoints(
        &self,
        from: u64,
    ) -> Result<keysafe_proto::audit::AuditCheckpoints, ClientError> {
        self.json(Req::get("/v1/admin/audit/checkpoints").query(&[("from", from.to_string())])?)
            .await
    }

    /// Asks the server to sign the head of its audit chain now.
    pub async fn audit_checkpoint_now(
        &self,
    ) -> Result<Option<keysafe_proto::audit::AuditCheckpoint>, ClientError> {
        self.json(Req::post("/v1/admin/audit/checkpoint")).await
    }

    /// Deletes the audit entries up to the signed checkpoint at `through` (after archiving).
    pub async fn audit_prune(
        &self,
        req: &keysafe_proto::audit::AuditPruneRequest,
    ) -> Result<keysafe_proto::audit::AuditPruneResponse, ClientError> {
        self.json(Req::post("/v1/admin/audit/prune").json(req)?)
            .await
    }

    /// `approve`, `disable` or `enable` a client.
    pub async fn client_action(
        &self,
        fp: &ClientFingerprint,
        action: &str,
    ) -> Result<ClientInfo, ClientError> {
        self.json(Req::post(format!("/v1/admin/clients/{fp}/{action}")))
            .await
    }
}

/// Marks servers that failed less than `reprobe_after` ago (according to the state file) as down.
fn restore_state(path: &std::path::Path, endpoints: &[Endpoint], reprobe_after: Duration) {
    let Ok(bytes) = std::fs::read(path) else {
        return;
    };
    let Ok(state) = serde_json::from_slice::<PersistedState>(&bytes) else {
        return;
    };
    let now_ms = unix_millis();
    for ep in endpoints {
        let Some(&t) = state.failed_at.get(&ep.base) else {
            continue;
        };
        // A time in the future (clock change) counts as just now.
        let ago = Duration::from_millis(now_ms.saturating_sub(t));
        if ago < reprobe_after
            && let Some(at) = Instant::now().checked_sub(ago)
            && let Ok(mut h) = ep.health.lock()
        {
            h.failed_at = Some(at);
        }
    }
}

/// Whether a cached tag has the form the server gives (`VERSION-HEX`), safe to send back.
fn plausible_etag(t: &str) -> bool {
    !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// What one deposit GET got.
enum FetchAnswer {
    /// The payload, and the entity tag that names it.
    Full(Fetched, Option<String>),
    /// `304`: the copy whose tag was sent is current.
    NotModified {
        version: DepositVersion,
        etag: String,
        acl_serial: Option<u64>,
    },
}

/// A cached entry as a fetch result; `None` if its version is not a valid one (a damaged file).
fn from_cache(
    e: &crate::cache::CachedEntry,
    source: Source,
    acl_serial: Option<u64>,
) -> Option<Fetched> {
    Some(Fetched {
        version: DepositVersion::new(e.meta.version).ok()?,
        payload: e.payload.clone(),
        encoding: e.meta.encoding.clone(),
        acl_serial,
        source,
    })
}

fn transport_error(ep: &Endpoint, e: reqwest::Error) -> AttemptError {
    if let Ok(mut obs) = ep.observed.lock()
        && let Some((expected, actual)) = obs.mismatch.take()
    {
        return AttemptError::Final(ClientError::FingerprintMismatch { expected, actual });
    }
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    let err = ClientError::Connect {
        url: ep.base.clone(),
        reason,
    };
    if e.is_connect() {
        AttemptError::NotSent(err)
    } else {
        AttemptError::MaybeSent(err)
    }
}

fn api_error(answer: &Answer) -> ClientError {
    let status = answer.status;
    let body = &answer.body;
    // A server that asks to be retried later (`read_only` during a database failover) says
    // when; the message carries it so that whoever reads it knows what to do.
    let retry_after = answer
        .headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ClientError::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: match retry_after {
                Some(s) => format!("{} (retry after {s} s)", b.error.message),
                None => b.error.message,
            },
            request_id: b.error.request_id,
        },
        Err(_) => ClientError::Unexpected {
            status: status.as_u16(),
            detail: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

/// True if the error means no server could answer the request, so that a retry elsewhere (or a
/// stale cached copy) may help: connection failures, 5xx, `sealed`, `unavailable`.
pub fn is_retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Api { code, status, .. } => {
            code.is_retryable() || StatusCode::from_u16(*status).is_ok_and(|s| s.is_server_error())
        }
        ClientError::Unexpected { status, .. } => {
            StatusCode::from_u16(*status).is_ok_and(|s| s.is_server_error())
        }
        ClientError::AllServersFailed { last, .. } => is_retryable(last),
        ClientError::CacheTooOld { cause, .. } => is_retryable(cause),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn only_tags_of_the_servers_form_are_sent_back() {
        assert!(plausible_etag("3-00112233445566778899aabbccddeeff"));
        for bad in ["", "3\"-x", "a b", "x\r\nInjected: 1", &"a".repeat(129)] {
            assert!(!plausible_etag(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_get_is_idempotent() {
        assert_eq!(Req::get("/x").retry, Retry::Idempotent);
        for m in [Method::PUT, Method::POST, Method::DELETE, Method::PATCH] {
            assert_eq!(Req::new(m, "/x").retry, Retry::OnlyIfNotSent);
        }
    }

    #[test]
    fn query_strings_are_encoded_and_skip_absent_fields() {
        let q = ListQuery {
            prefix: Some("a b/&".into()),
            limit: Some(5),
            page_token: None,
            deleted: Some(true),
            owner: None,
        };
        let r = Req::get("/v1/deposits").query(&q).unwrap();
        assert_eq!(
            r.path,
            "/v1/deposits?deleted=true&limit=5&prefix=a%20b%2F%26"
        );
        let r = Req::get("/a")
            .query(&vec![("org", "acme"), ("state", "pending")])
            .unwrap();
        assert_eq!(r.path, "/a?org=acme&state=pending");
        let r = Req::get("/a").query(&Vec::<(&str, &str)>::new()).unwrap();
        assert_eq!(r.path, "/a");
    }

    #[test]
    fn retryable_errors() {
        let connect = ClientError::Connect {
            url: "https://a".into(),
            reason: "refused".into(),
        };
        assert!(is_retryable(&connect));
        let api = |code, status| ClientError::Api {
            status,
            code,
            message: String::new(),
            request_id: None,
        };
        assert!(is_retryable(&api(keysafe_proto::ErrorCode::Sealed, 503)));
        assert!(is_retryable(&api(keysafe_proto::ErrorCode::Internal, 500)));
        assert!(!is_retryable(&api(keysafe_proto::ErrorCode::NotFound, 404)));
        assert!(!is_retryable(&api(
            keysafe_proto::ErrorCode::Forbidden,
            403
        )));
        assert!(!is_retryable(&ClientError::FingerprintMismatch {
            expected: ClientFingerprint::of_spki(b"a"),
            actual: ClientFingerprint::of_spki(b"b"),
        }));
        assert!(is_retryable(&ClientError::AllServersFailed {
            tried: vec![],
            last: Box::new(connect),
            not_retried: false,
        }));
    }

    #[test]
    fn backoff_is_bounded_with_jitter() {
        let c = KeysafeClient::new(
            "https://127.0.0.1:1",
            None,
            &ServerTrust::TrustOnFirstUse,
            &ClientOptions::default(),
        )
        .unwrap();
        for pass in 0..40 {
            assert!(c.backoff(pass) <= Duration::from_secs(2));
        }
        assert!(c.backoff(0) <= Duration::from_millis(100));
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| c.backoff(4)).collect();
        assert!(distinct.len() > 1, "no jitter");
    }
}
