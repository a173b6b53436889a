//! Server configuration: `keysafe.toml` in the data directory, parsed once at start into a
//! validated [`Config`]. The documented template is the single source of the defaults.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CONFIG_FILE: &str = "keysafe.toml";
pub const DEFAULT_PORT: u16 = 11371;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:11371";

/// The documented configuration file, with `listen` and `hostname` filled in. `init` writes it;
/// `keysafe serve --print-default-config` prints it with the defaults.
pub fn config_template(listen: SocketAddr, hostname: &str) -> String {
    config_template_with_seal(
        listen,
        hostname,
        &SealTemplate::default(),
        &StorageTemplate::default(),
    )
}

/// The `[storage]` settings `init` writes into the template: a storage URL (`--storage`) and,
/// for a database that needs one, the file holding its password. The storage crate documents
/// and validates them; this crate never looks inside.
#[derive(Debug, Clone)]
pub struct StorageTemplate {
    pub url: String,
    pub password_file: Option<PathBuf>,
}

impl Default for StorageTemplate {
    fn default() -> Self {
        Self {
            url: keysafe_store::config::DEFAULT_URL.into(),
            password_file: None,
        }
    }
}

/// The `[seal]` settings `init` writes into the template.
#[derive(Debug, Clone)]
pub struct SealTemplate {
    pub kind: String,
    pub pkcs11_module: PathBuf,
    pub pkcs11_token: String,
    pub pkcs11_key: String,
    pub pkcs11_pin_file: Option<PathBuf>,
    pub pkcs11_mode: String,
    /// The file seal's root key: `None` for `root.key` in the data directory (created by
    /// `init`); a node joining a cluster names its copy of the cluster's root key.
    pub root_key_file: Option<PathBuf>,
}

impl Default for SealTemplate {
    fn default() -> Self {
        Self {
            kind: "file".into(),
            pkcs11_module: DEFAULT_PKCS11_MODULE.into(),
            pkcs11_token: "keysafe".into(),
            pkcs11_key: "keysafe-seal".into(),
            pkcs11_pin_file: None,
            pkcs11_mode: "keyring".into(),
            root_key_file: None,
        }
    }
}

pub const DEFAULT_PKCS11_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// `s` as a TOML string, quoted and escaped by the toml crate, so a value written into the
/// template reads back as exactly that value (a host name or a token label can never end the
/// string and add settings of its own).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The documented `[seal]` section.
pub fn seal_section(t: &SealTemplate) -> String {
    let pin_file = match &t.pkcs11_pin_file {
        Some(p) => format!("pkcs11_pin_file = {}", toml_str(&p.display().to_string())),
        None => "# pkcs11_pin_file = \"/etc/keysafe/hsm.pin\"".to_owned(),
    };
    let root_key = toml_str(
        &t.root_key_file
            .as_ref()
            .map_or_else(|| "root.key".to_owned(), |p| p.display().to_string()),
    );
    format!(
        r#"[seal]
# What protects the keyring at rest (docs/operations.md, "Seals"):
#   "file"       a 256-bit root key in a file only the server user can read (mode 0600);
#   "passphrase" a key derived with Argon2id from an operator passphrase, given at start by
#                --passphrase-file, KEYSAFE_PASSPHRASE or a prompt; without one the server
#                starts sealed until `keysafe admin unseal`;
#   "pkcs11"     a non-extractable AES-256 key in an HSM token.
# Change it only with `keysafe admin seal migrate` (offline).
type = {kind}
# file: the root key file.
root_key_file = {root_key}
# pkcs11: the PKCS#11 module (shared library) of the HSM.
pkcs11_module = {module}
# pkcs11: the label of the token that holds the key.
pkcs11_token = {token}
# pkcs11: the label of the AES key (created by `init` if absent).
pkcs11_key = {key}
# pkcs11: a file holding the user PIN (mode 0600). Without it, KEYSAFE_PKCS11_PIN is used.
{pin_file}
# pkcs11: "keyring" (the HSM opens the keyring at start; fast) or "per-deposit" (every data key
# is also wrapped by the HSM; an HSM round trip per request; stricter).
pkcs11_mode = {mode}
# How often the server checks that the HSM key still exists; if it is gone the server seals
# itself and nothing can be decrypted any more.
check_interval = "30s"

"#,
        kind = toml_str(&t.kind),
        module = toml_str(&t.pkcs11_module.display().to_string()),
        token = toml_str(&t.pkcs11_token),
        key = toml_str(&t.pkcs11_key),
        mode = toml_str(&t.pkcs11_mode),
    )
}

/// [`config_template`] with a chosen seal and storage.
pub fn config_template_with_seal(
    listen: SocketAddr,
    hostname: &str,
    seal: &SealTemplate,
    storage: &StorageTemplate,
) -> String {
    let seal = seal_section(seal);
    let storage = keysafe_store::storage_section(&storage.url, storage.password_file.as_deref());
    let hostname = toml_str(hostname);
    let cluster = crate::cluster::CONFIG_SECTION;
    format!(
        r#"# keysafe server configuration.
# Relative paths are resolved against the data directory (the folder that holds this file).
# Every key is optional; the values shown are the defaults unless `init` chose them.

[server]
# Address and port of the HTTPS listener. keysafe has no plaintext listener.
listen = "{listen}"
# The name clients use to reach this server; `init` puts it (and the listen IP) in the
# certificate's subject alternative names.
hostname = {hostname}
# Server certificate chain and private key, PEM. `init` generates a self-signed ECDSA P-256 pair;
# replace them with CA-issued files if you like (clients then register with --ca-cert).
tls_cert = "tls/server.crt"
tls_key = "tls/server.key"
# The certificate and key are read again on SIGHUP and when either file changes (checked this
# often; "0s" checks only on SIGHUP). Open connections keep the certificate they started with.
tls_reload_interval = "10s"
# A reload that finds a different key (a new fingerprint) is refused, because clients that
# pinned the served fingerprint would refuse the server; a renewed certificate for the same key
# is always taken. Set to true when clients trust a CA (register --ca-cert) rather than a pin.
tls_allow_key_change = false
# Lowest TLS version accepted: "1.2" or "1.3". TLS 1.3 is preferred whenever the client has it.
tls_min_version = "1.2"
# A connection that has not completed its TLS handshake within this time is dropped.
handshake_timeout = "10s"
# After the handshake, the first bytes of a request must arrive within this time.
first_byte_timeout = "10s"
# HTTP/1: a connection that does not send a complete request header within this time is dropped.
header_read_timeout = "30s"
# A connection with no request in progress for this long is closed (HTTP/1 keep-alive and
# HTTP/2 alike).
idle_timeout = "30s"
# A request must be answered within this time, reading its body included; past it the answer
# is 408 request_timeout.
request_timeout = "60s"
# A request body must keep arriving: a read that waits this long for the next bytes fails with
# 408 request_timeout (a body trickled a byte at a time is cut).
body_read_timeout = "10s"
# HTTP/2: ping an idle peer this often and close the connection if the ping is not answered
# within http2_keep_alive_timeout.
http2_keep_alive_interval = "20s"
http2_keep_alive_timeout = "10s"
# Most connections served at once; more wait in the listen backlog.
max_connections = 4096
# Most connections from one source address (an IPv6 address counts by its /64), so that one
# source cannot hold every slot. Connections over it are closed at once. Raise it for many
# clients behind one NAT address.
max_connections_per_address = 256
# On SIGTERM or SIGINT, in-flight requests get this long to finish.
shutdown_grace = "30s"

{storage}{seal}
[keyring]
# The re-wrap job (after `keysafe admin keyring rotate`) moves this many data keys per
# transaction...
rewrap_batch = 256
# ...and pauses this long between batches, leaving room for client traffic.
rewrap_pause = "0s"

[limits]
# Largest deposit payload in bytes (default 1 MiB). Larger puts get 413 payload_too_large.
max_deposit_size = 1048576
# How long a client's identity and state are cached in memory. Changes made through this
# server apply at once; changes made through another server apply within this time.
identity_cache_ttl = "5s"

[clients]
# Clone detection: every client holds a sequenced token that the server replaces at most this
# often. A copy of a client's identity used elsewhere presents an outdated token and locks the
# client ("suspected-clone") until an administrator resets its token.
token_rotation = "5m"
# How long a replaced token is still accepted, for requests that were in flight when it
# rotated. Must be longer than the slowest request.
token_grace = "5m"

[registration]
# Failed registrations (wrong secret, unknown organisation, used or expired token) allowed per
# source address within failure_window; past that the address gets 429 rate_limited.
failure_limit = 10
failure_window = "1m"
# Registrations into organisations that need an administrator's approval leave a pending client
# each: at most pending_limit per source address, and pending_total from all sources together,
# within pending_window. Past that: 429 rate_limited.
pending_limit = 5
pending_total = 1000
pending_window = "1h"
# Registrations verified at once (each Argon2id verification takes 19 MiB and tens of
# milliseconds); more wait up to 2 s, then get 429 rate_limited. 0: the number of cores.
max_concurrent = 0

[audit]
# Every request is recorded in a hash-chained, signed audit trail in the database (docs/audit.md).
# The name of this node in audit entries; empty means the server's hostname.
node = ""
# What happens when an audit entry cannot be recorded (the audit store fails or the queue is
# full): "fail_closed" refuses requests with 503 unavailable until the trail recovers;
# "insecure_continue" serves them anyway and only counts and logs the loss. Writes are never
# made without their entry, whatever this says.
on_failure = "fail_closed"
# Requests from callers that nobody authenticated and that change nothing (health checks,
# refusals of missing or unknown certificates, garbage paths) are counted in the metric
# keysafe_audit_anonymous_requests_total, and only sampled into the chain: per interval, the
# first anonymous_per_source from each source address and at most anonymous_total in all;
# every further one is counted in one summary entry per interval (docs/audit.md).
anonymous_interval = "1m"
anonymous_per_source = 5
anonymous_total = 100
# Entries of reads and refusals wait here (in memory) to be written in batches. A full queue
# counts as a failure.
queue_capacity = 10000
# How often the head of the chain is signed (a checkpoint), if it moved. Also on shutdown.
checkpoint_interval = "1m"
# Also write every entry, as JSON lines, to this file (empty: no file). Relative to the data
# directory.
file = ""
# Rotate the file when it grows past this many bytes; keep this many rotated files
# (FILE.1 is the newest).
file_max_size = 104857600
file_keep = 5
# Also send every entry to a syslog server (RFC 5424, facility 13 "log audit"), as "HOST:PORT"
# (empty: no syslog).
syslog = ""
# "udp" (one datagram per entry) or "tcp" (octet-counted frames, RFC 6587).
syslog_protocol = "udp"

[backup]
# Backups made over the API (`POST /v1/admin/backup`, `keysafe admin --home ... backup create`)
# never carry the root key, the TLS private key or the administrator identity, unless every
# recipient of the backup is one of these age recipients ("age1..."): pin here the recipients
# whose identities are kept offline, so that no administrator can take the keys to a recipient
# of their choosing. Backups made on the data directory (`keysafe admin --data-dir DIR backup
# create`, on this host) are not limited by this list.
key_recipients = []

{cluster}[metrics]
# Prometheus metrics at http://LISTEN/metrics, plain HTTP, on a separate listener (keep it on
# loopback or a management network). Empty: no metrics listener. `keysafe serve
# --metrics-listen` overrides it.
listen = "127.0.0.1:11372"

[log]
# "text" (human-readable) or "json" (one JSON object per line).
format = "text"
# A tracing filter: "info", "debug", "keysafe_server=debug,info", ... The environment variable
# KEYSAFE_LOG overrides it.
level = "info"
"#
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    storage: keysafe_store::StorageSettings,
    #[serde(default)]
    seal: RawSeal,
    #[serde(default)]
    clients: RawClients,
    #[serde(default)]
    registration: RawRegistration,
    #[serde(default)]
    keyring: RawKeyring,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    cluster: crate::cluster::RawCluster,
    #[serde(default)]
    backup: RawBackup,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBackup {
    key_recipients: Vec<String>,
}

/// `[backup]`: what backups over the API may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupConfig {
    /// The only age recipients a backup over the API may carry key-bearing files to.
    pub key_recipients: Vec<String>,
}

// ---- audit trail and metrics ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    node: String,
    on_failure: String,
    queue_capacity: usize,
    #[serde(with = "humantime_serde")]
    checkpoint_interval: Duration,
    file: PathBuf,
    file_max_size: u64,
    file_keep: u32,
    syslog: String,
    syslog_protocol: String,
    #[serde(with = "humantime_serde")]
    anonymous_interval: Duration,
    anonymous_per_source: u32,
    anonymous_total: u32,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            node: String::new(),
            on_failure: "fail_closed".into(),
            queue_capacity: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            file: PathBuf::new(),
            file_max_size: 100 * 1024 * 1024,
            file_keep: 5,
            syslog: String::new(),
            syslog_protocol: "udp".into(),
            anonymous_interval: Duration::from_secs(60),
            anonymous_per_source: 5,
            anonymous_total: 100,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN.into(),
        }
    }
}

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:11372";

/// What to do when an audit entry cannot be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFailurePolicy {
    /// Refuse requests (503 `unavailable`) until the trail records again.
    FailClosed,
    /// Serve anyway; count and log the lost entries. Named so because it is.
    InsecureContinue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogProtocol {
    Udp,
    Tcp,
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub node: String,
    pub on_failure: AuditFailurePolicy,
    pub queue_capacity: usize,
    pub checkpoint_interval: Duration,
    pub file: Option<PathBuf>,
    pub file_max_size: u64,
    pub file_keep: u32,
    pub syslog: Option<(String, SyslogProtocol)>,
    /// Sampling of requests nobody authenticated that changed nothing.
    pub anonymous: AnonymousSampling,
    /// The node's spool file and the name its batches carry, for entries recorded while the
    /// database is read-only (`audit_spool`); `None` keeps no spool.
    pub spool: Option<(PathBuf, String)>,
}

/// How requests from callers nobody authenticated reach the chain: counted always, recorded
/// only up to these numbers per interval, the rest summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnonymousSampling {
    pub interval: Duration,
    pub per_source: u32,
    pub total: u32,
}

// ---- end audit trail and metrics ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    hostname: String,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    #[serde(with = "humantime_serde")]
    tls_reload_interval: Duration,
    tls_allow_key_change: bool,
    tls_min_version: String,
    #[serde(with = "humantime_serde")]
    handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    first_byte_timeout: Duration,
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    body_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    http2_keep_alive_interval: Duration,
    #[serde(with = "humantime_serde")]
    http2_keep_alive_timeout: Duration,
    max_connections: usize,
    max_connections_per_address: usize,
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            hostname: "localhost".into(),
            tls_cert: "tls/server.crt".into(),
            tls_key: "tls/server.key".into(),
            tls_reload_interval: Duration::from_secs(10),
            tls_allow_key_change: false,
            tls_min_version: "1.2".into(),
            handshake_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            http2_keep_alive_interval: Duration::from_secs(20),
            http2_keep_alive_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_address: 256,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSeal {
    #[serde(rename = "type")]
    kind: String,
    root_key_file: PathBuf,
    pkcs11_module: PathBuf,
    pkcs11_token: String,
    pkcs11_key: String,
    pkcs11_pin_file: Option<PathBuf>,
    pkcs11_mode: String,
    #[serde(with = "humantime_serde")]
    check_interval: Duration,
}

impl Default for RawSeal {
    fn default() -> Self {
        Self {
            kind: "file".into(),
            root_key_file: "root.key".into(),
            pkcs11_module: DEFAULT_PKCS11_MODULE.into(),
            pkcs11_token: "keysafe".into(),
            pkcs11_key: "keysafe-seal".into(),
            pkcs11_pin_file: None,
            pkcs11_mode: "keyring".into(),
            check_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKeyring {
    rewrap_batch: u32,
    #[serde(with = "humantime_serde")]
    rewrap_pause: Duration,
}

impl Default for RawKeyring {
    fn default() -> Self {
        Self {
            rewrap_batch: 256,
            rewrap_pause: Duration::ZERO,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_deposit_size: usize,
    #[serde(with = "humantime_serde")]
    identity_cache_ttl: Duration,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_deposit_size: 1024 * 1024,
            identity_cache_ttl: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawClients {
    #[serde(with = "humantime_serde")]
    token_rotation: Duration,
    #[serde(with = "humantime_serde")]
    token_grace: Duration,
}

impl Default for RawClients {
    fn default() -> Self {
        Self {
            token_rotation: Duration::from_secs(300),
            token_grace: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRegistration {
    failure_limit: u32,
    #[serde(with = "humantime_serde")]
    failure_window: Duration,
    pending_limit: u32,
    pending_total: u64,
    #[serde(with = "humantime_serde")]
    pending_window: Duration,
    max_concurrent: usize,
}

impl Default for RawRegistration {
    fn default() -> Self {
        Self {
            failure_limit: 10,
            failure_window: Duration::from_secs(60),
            pending_limit: 5,
            pending_total: 1000,
            pending_window: Duration::from_secs(3600),
            max_concurrent: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: String,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMinVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub enum SealConfig {
    File {
        root_key_file: PathBuf,
    },
    Passphrase,
    Pkcs11 {
        module: PathBuf,
        token: String,
        key_label: String,
        pin_file: Option<PathBuf>,
        mode: keysafe_hsm::Pkcs11Mode,
    },
}

impl SealConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SealConfig::File { .. } => "file",
            SealConfig::Passphrase => "passphrase",
            SealConfig::Pkcs11 { .. } => "pkcs11",
        }
    }
}

/// The validated configuration. Paths are absolute (resolved against the data directory).
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub hostname: String,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// How often the certificate files are checked for changes; zero: only on SIGHUP.
    pub tls_reload_interval: Duration,
    /// Whether a reload may serve a key with another fingerprint.
    pub tls_allow_key_change: bool,
    pub tls_min_version: TlsMinVersion,
    pub handshake_timeout: Duration,
    /// Per-connection limits (first bytes, idle, HTTP/2 keep-alive, body reads).
    pub connection: keysafe_net::ConnectionSettings,
    /// Whole request, body included.
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub shutdown_grace: Duration,
    /// Where the state lives; only the storage factory looks inside.
    pub storage: keysafe_store::StorageConfig,
    pub seal: SealConfig,
    pub seal_check_interval: Duration,
    pub rewrap: keysafe_core::service::rewrap::RewrapSettings,
    pub max_deposit_size: usize,
    pub identity_cache_ttl: Duration,
    pub token_rotation: Duration,
    pub token_grace: Duration,
    pub registration_failure_limit: u32,
    pub registration_failure_window: Duration,
    pub registration_pending_limit: u32,
    pub registration_pending_total: u64,
    pub registration_pending_window: Duration,
    /// 0: the number of cores.
    pub registration_max_concurrent: usize,
    pub log_format: LogFormat,
    pub log_level: String,
    pub audit: AuditConfig,
    /// `None`: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    pub backup: BackupConfig,
    /// This node's part in a cluster (heartbeats, change following).
    pub cluster: crate::cluster::ClusterConfig,
}

impl Config {
    /// Reads and validates `DIR/keysafe.toml`.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(data_dir, &text).with_context(|| format!("invalid {}", path.display()))
    }

    pub fn parse(data_dir: &Path, text: &str) -> anyhow::Result<Self> {
        let raw: RawConfig = toml::from_str(text)?;
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                data_dir.join(p)
            }
        };
        let listen: SocketAddr =
            raw.server.listen.parse().with_context(|| {
                format!("server.listen {:?} is not an IP:port", raw.server.listen)
            })?;
        let tls_min_version = match raw.server.tls_min_version.as_str() {
            "1.2" => TlsMinVersion::Tls12,
            "1.3" => TlsMinVersion::Tls13,
            other => bail!("server.tls_min_version {other:?}: expected \"1.2\" or \"1.3\""),
        };
        if raw.server.max_connections == 0 || raw.server.max_connections_per_address == 0 {
            bail!("server.max_connections and max_connections_per_address must be at least 1");
        }
        for (name, d) in [
            ("handshake_timeout", raw.server.handshake_timeout),
            ("first_byte_timeout", raw.server.first_byte_timeout),
            ("header_read_timeout", raw.server.header_read_timeout),
            ("idle_timeout", raw.server.idle_timeout),
            ("request_timeout", raw.server.request_timeout),
            ("body_read_timeout", raw.server.body_read_timeout),
            (
                "http2_keep_alive_interval",
                raw.server.http2_keep_alive_interval,
            ),
            (
                "http2_keep_alive_timeout",
                raw.server.http2_keep_alive_timeout,
            ),
        ] {
            if d.is_zero() {
                bail!("server.{name} must be more than zero");
            }
        }
        let storage = keysafe_store::StorageConfig::from_settings(&raw.storage, data_dir)?;
        let seal = match raw.seal.kind.as_str() {
            "file" => SealConfig::File {
                root_key_file: resolve(&raw.seal.root_key_file),
            },
            "passphrase" => SealConfig::Passphrase,
            "pkcs11" => SealConfig::Pkcs11 {
                module: raw.seal.pkcs11_module.clone(),
                token: raw.seal.pkcs11_token.clone(),
                key_label: raw.seal.pkcs11_key.clone(),
                pin_file: raw.seal.pkcs11_pin_file.as_deref().map(resolve),
                mode: keysafe_hsm::Pkcs11Mode::parse(&raw.seal.pkcs11_mode).with_context(|| {
                    format!(
                        "seal.pkcs11_mode {:?}: expected \"keyring\" or \"per-deposit\"",
                        raw.seal.pkcs11_mode
                    )
                })?,
            },
            other => bail!("seal.type {other:?}: expected \"file\", \"passphrase\" or \"pkcs11\""),
        };
        if raw.seal.check_interval.is_zero() {
            bail!("seal.check_interval must be more than zero");
        }
        if raw.keyring.rewrap_batch == 0 {
            bail!("keyring.rewrap_batch must be at least 1");
        }
        if raw.limits.max_deposit_size == 0 || raw.limits.max_deposit_size > 64 * 1024 * 1024 {
            bail!("limits.max_deposit_size must be between 1 byte and 64 MiB");
        }
        if raw.clients.token_grace.is_zero() {
            bail!("clients.token_grace must be longer than the slowest request, not zero");
        }
        if raw.registration.failure_limit == 0 || raw.registration.failure_window.is_zero() {
            bail!("registration.failure_limit and failure_window must be positive");
        }
        if raw.registration.pending_limit == 0
            || raw.registration.pending_total == 0
            || raw.registration.pending_window.is_zero()
        {
            bail!("registration.pending_limit, pending_total and pending_window must be positive");
        }
        if raw.audit.anonymous_interval.is_zero() {
            bail!("audit.anonymous_interval must be more than zero");
        }
        let log_format = match raw.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("log.format {other:?}: expected \"text\" or \"json\""),
        };
        let on_failure = match raw.audit.on_failure.as_str() {
            "fail_closed" => AuditFailurePolicy::FailClosed,
            "insecure_continue" => AuditFailurePolicy::InsecureContinue,
            other => bail!(
                "audit.on_failure {other:?}: expected \"fail_closed\" or \"insecure_continue\""
            ),
        };
        if raw.audit.queue_capacity == 0 || raw.audit.checkpoint_interval.is_zero() {
            bail!("audit.queue_capacity and audit.checkpoint_interval must be positive");
        }
        let syslog = match raw.audit.syslog.as_str() {
            "" => None,
            addr => Some((
                addr.to_owned(),
                match raw.audit.syslog_protocol.as_str() {
                    "udp" => SyslogProtocol::Udp,
                    "tcp" => SyslogProtocol::Tcp,
                    other => bail!("audit.syslog_protocol {other:?}: expected \"udp\" or \"tcp\""),
                },
            )),
        };
        let audit = AuditConfig {
            node: if raw.audit.node.is_empty() {
                raw.server.hostname.clone()
            } else {
                raw.audit.node
            },
            on_failure,
            queue_capacity: raw.audit.queue_capacity,
            checkpoint_interval: raw.audit.checkpoint_interval,
            file: (!raw.audit.file.as_os_str().is_empty()).then(|| resolve(&raw.audit.file)),
            file_max_size: raw.audit.file_max_size.max(1024),
            file_keep: raw.audit.file_keep,
            syslog,
            anonymous: AnonymousSampling {
                interval: raw.audit.anonymous_interval,
                per_source: raw.audit.anonymous_per_source,
                total: raw.audit.anonymous_total,
            },
            spool: None,
        };
        if !raw.backup.key_recipients.is_empty() {
            crate::backup::parse_recipients(&raw.backup.key_recipients)
                .map_err(|e| anyhow::anyhow!("backup.key_recipients: {e}"))?;
        }
        let backup = BackupConfig {
            key_recipients: raw.backup.key_recipients,
        };
        let metrics_listen = match raw.metrics.listen.as_str() {
            "" => None,
            l => Some(
                l.parse()
                    .with_context(|| format!("metrics.listen {l:?} is not an IP:port"))?,
            ),
        };
        let cluster = crate::cluster::ClusterConfig::from_raw(raw.cluster)?;
        Ok(Self {
            audit,
            metrics_listen,
            backup,
            cluster,
            data_dir: data_dir.to_owned(),
            listen,
            hostname: raw.server.hostname,
            tls_cert: resolve(&raw.server.tls_cert),
            tls_key: resolve(&raw.server.tls_key),
            tls_reload_interval: raw.server.tls_reload_interval,
            tls_allow_key_change: raw.server.tls_allow_key_change,
            tls_min_version,
            handshake_timeout: raw.server.handshake_timeout,
            connection: keysafe_net::ConnectionSettings {
                first_byte_timeout: raw.server.first_byte_timeout,
                header_read_timeout: raw.server.header_read_timeout,
                idle_timeout: raw.server.idle_timeout,
                body_read_timeout: raw.server.body_read_timeout,
                http2_keep_alive_interval: raw.server.http2_keep_alive_interval,
                http2_keep_alive_timeout: raw.server.http2_keep_alive_timeout,
                shutdown_grace: raw.server.shutdown_grace,
                ..keysafe_net::ConnectionSettings::default()
            },
            request_timeout: raw.server.request_timeout,
            max_connections: raw.server.max_connections,
            max_connections_per_address: raw.server.max_connections_per_address,
            shutdown_grace: raw.server.shutdown_grace,
            storage,
            seal,
            seal_check_interval: raw.seal.check_interval,
            rewrap: keysafe_core::service::rewrap::RewrapSettings {
                batch: raw.keyring.rewrap_batch,
                pause: raw.keyring.rewrap_pause,
            },
            max_deposit_size: raw.limits.max_deposit_size,
            identity_cache_ttl: raw.limits.identity_cache_ttl,
            token_rotation: raw.clients.token_rotation,
            token_grace: raw.clients.token_grace,
            registration_failure_limit: raw.registration.failure_limit,
            registration_failure_window: raw.registration.failure_window,
            registration_pending_limit: raw.registration.pending_limit,
            registration_pending_total: raw.registration.pending_total,
            registration_pending_window: raw.registration.pending_window,
            registration_max_concurrent: raw.registration.max_concurrent,
            log_format,
            log_level: raw.log.level,
        })
    }

    /// What the domain enforces.
    pub fn limits(&self) -> keysafe_core::Limits {
        keysafe_core::Limits {
            max_deposit_size: self.max_deposit_size,
            identity_cache_ttl: self.identity_cache_ttl,
            token_rotation: self.token_rotation,
            token_grace: self.token_grace,
        }
    }

    /// The URL a local client (such as the admin CLI) uses to reach this server.
    pub fn local_url(&self) -> String {
        let ip = if self.listen.ip().is_unspecified() {
            match self.listen {
                SocketAddr::V4(_) => "127.0.0.1".to_owned(),
                SocketAddr::V6(_) => "[::1]".to_owned(),
            }
        } else {
            match self.listen {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            }
        };
        format!("https://{ip}:{}", self.listen.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values `init` takes from its flags are written escaped: each reads back as given, and
    /// none can end its string and add a setting (`--hostname 'a" #'` used to leave the host
    /// name "a"; a module path with `\e` read back with an escape character in it). The
    /// inputs the fuzz target `server_config` found, and their relatives.
    #[test]
    fn template_values_read_back_exactly() {
        let dir = Path::new("/data");
        for (hostname, module, token, pin) in [
            ("a\" #", "/opt/hsm/lib.so", "keysafe", "hsm.pin"),
            ("h", "itsTTTT\\eitsTTT", "t", "p"),
            (
                "x\"\nlisten = \"0.0.0.0:1\"\n#",
                "C:\\hsm\\p11.dll",
                "tok\"en",
                "pin\\\"file",
            ),
            ("tab\there", "/m\u{1b}", "ctl\u{7f}", "nl\nfile"),
        ] {
            let seal = SealTemplate {
                kind: "pkcs11".into(),
                pkcs11_module: module.into(),
                pkcs11_token: token.into(),
                pkcs11_key: format!("{token}-key"),
                pkcs11_pin_file: Some(pin.into()),
                pkcs11_mode: "keyring".into(),
                root_key_file: None,
            };
            let listen = DEFAULT_LISTEN.parse().unwrap();
            let text =
                config_template_with_seal(listen, hostname, &seal, &StorageTemplate::default());
            let c = Config::parse(dir, &text).unwrap();
            assert_eq!(c.hostname, hostname);
            assert_eq!(c.listen, listen);
            let SealConfig::Pkcs11 {
                module: m,
                token: t,
                key_label: k,
                pin_file: p,
                ..
            } = &c.seal
            else {
                panic!("not the pkcs11 seal: {text}");
            };
            assert_eq!(m, Path::new(module));
            assert_eq!(t, token);
            assert_eq!(k, &format!("{token}-key"));
            assert_eq!(p.as_deref(), Some(dir.join(pin).as_path()));
        }
    }

    #[test]
    fn template_parses_to_defaults() {
        let dir = Path::new("/data");
        let text = config_template(DEFAULT_LISTEN.parse().unwrap(), "localhost");
        let c = Config::parse(dir, &text).unwrap();
        let d = Config::parse(dir, "").unwrap();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.tls_cert, Path::new("/data/tls/server.crt"));
        assert_eq!(c.max_deposit_size, d.max_deposit_size);
        assert_eq!(c.identity_cache_ttl, d.identity_cache_ttl);
        assert_eq!(c.handshake_timeout, d.handshake_timeout);
        assert_eq!(c.local_url(), "https://127.0.0.1:11371");
    }

    #[test]
    fn refuses_bad_values() {
        let dir = Path::new("/d");
        assert!(Config::parse(dir, "[server]\nlisten = \"nope\"").is_err());
        assert!(Config::parse(dir, "[server]\ntls_min_version = \"1.0\"").is_err());
        assert!(Config::parse(dir, "[server]\nunknown = 1").is_err());
        assert!(Config::parse(dir, "[storage]\nbackend = \"mysql\"").is_err());
        assert!(Config::parse(dir, "[storage]\nurl = \"postgres://u:pw@h/db\"").is_err());
        assert!(Config::parse(dir, "[limits]\nmax_deposit_size = 0").is_err());
        assert!(Config::parse(dir, "[seal]\ntype = \"rot13\"").is_err());
        assert!(Config::parse(dir, "[seal]\ntype = \"pkcs11\"\npkcs11_mode = \"fast\"").is_err());
        assert!(Config::parse(dir, "[keyring]\nrewrap_batch = 0").is_err());
        assert!(Config::parse(dir, "[audit]\non_failure = \"continue\"").is_err());
        assert!(Config::parse(dir, "[audit]\nqueue_capacity = 0").is_err());
        assert!(
            Config::parse(
                dir,
                "[audit]\nsyslog = \"h:514\"\nsyslog_protocol = \"tls\""
            )
            .is_err()
        );
        assert!(Config::parse(dir, "[metrics]\nlisten = \"nope\"").is_err());
        for bad in [
            "[server]\nmax_connections_per_address = 0",
            "[server]\nfirst_byte_timeout = \"0s\"",
            "[server]\nidle_timeout = \"0s\"",
            "[server]\nbody_read_timeout = \"0s\"",
            "[server]\nrequest_timeout = \"0s\"",
            "[server]\nhttp2_keep_alive_interval = \"0s\"",
            "[registration]\npending_limit = 0",
            "[registration]\npending_window = \"0s\"",
            "[audit]\nanonymous_interval = \"0s\"",
        ] {
            assert!(Config::parse(dir, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connection_limits_reach_the_connection_settings() {
        let dir = Path::new("/d");
        let c = Config::parse(
            dir,
            "[server]\nfirst_byte_timeout = \"3s\"\nidle_timeout = \"4s\"\n\
             body_read_timeout = \"5s\"\nrequest_timeout = \"6s\"\n\
             http2_keep_alive_interval = \"7s\"\nhttp2_keep_alive_timeout = \"8s\"\n\
             max_connections_per_address = 9\nshutdown_grace = \"10s\"",
        )
        .unwrap();
        assert_eq!(c.connection.first_byte_timeout, Duration::from_secs(3));
        assert_eq!(c.connection.idle_timeout, Duration::from_secs(4));
        assert_eq!(c.connection.body_read_timeout, Duration::from_secs(5));
        assert_eq!(c.request_timeout, Duration::from_secs(6));
        assert_eq!(
            c.connection.http2_keep_alive_interval,
            Duration::from_secs(7)
        );
        assert_eq!(
            c.connection.http2_keep_alive_timeout,
            Duration::from_secs(8)
        );
        assert_eq!(c.max_connections_per_address, 9);
        assert_eq!(c.connection.shutdown_grace, Duration::from_secs(10));
        // The template's values are the defaults.
        let t = Config::parse(
            dir,
            &config_template(DEFAULT_LISTEN.parse().unwrap(), "localhost"),
        )
        .unwrap();
        let d = Config::parse(dir, "").unwrap();
        assert_eq!(format!("{:?}", t.connection), format!("{:?}", d.connection));
        assert_eq!(t.request_timeout, d.request_timeout);
        assert_eq!(t.max_connections_per_address, d.max_connections_per_address);
        assert_eq!(t.audit.anonymous, d.audit.anonymous);
        assert_eq!(t.registration_pending_limit, d.registration_pending_limit);
        assert_eq!(t.registration_max_concurrent, d.registration_max_concurrent);
    }

    /// Every key in the template has a comment line directly above it (or above its block).
    #[test]
    fn every_template_key_is_documented() {
        for seal in ["file", "passphrase", "pkcs11"] {
            let t = config_template_with_seal(
                DEFAULT_LISTEN.parse().unwrap(),
                "localhost",
                &SealTemplate {
                    kind: seal.into(),
                    ..SealTemplate::default()
                },
                &StorageTemplate::default(),
            );
            let c = Config::parse(Path::new("/d"), &t).unwrap();
            assert_eq!(c.seal.kind(), seal);
            assert_eq!(c.storage.to_string(), "/d/keysafe.db");
            let lines: Vec<&str> = t.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                let l = l.trim();
                if l.is_empty() || l.starts_with('#') || l.starts_with('[') {
                    continue;
                }
                assert!(
                    i > 0 && lines[i - 1].trim_start().starts_with('#')
                        || lines[..i]
                            .iter()
                            .rev()
                            .take_while(|p| !p.trim().is_empty())
                            .any(|p| p.trim_start().starts_with('#')),
                    "undocumented key: {l}"
                );
            }
        }
    }

    #[test]
    fn audit_and_metrics_settings() {
        let dir = Path::new("/d");
        let d = Config::parse(dir, "").unwrap();
        assert_eq!(d.audit.on_failure, AuditFailurePolicy::FailClosed);
        assert_eq!(d.audit.node, "localhost");
        assert!(d.audit.file.is_none() && d.audit.syslog.is_none());
        assert_eq!(
            d.metrics_listen,
            Some(DEFAULT_METRICS_LISTEN.parse().unwrap())
        );
        let c = Config::parse(
            dir,
            "[audit]\non_failure = \"insecure_continue\"\nfile = \"a.jsonl\"\n\
             syslog = \"127.0.0.1:514\"\nsyslog_protocol = \"tcp\"\n[metrics]\nlisten = \"\"",
        )
        .unwrap();
        assert_eq!(c.audit.on_failure, AuditFailurePolicy::InsecureContinue);
        assert_eq!(c.audit.file.as_deref(), Some(Path::new("/d/a.jsonl")));
        assert_eq!(
            c.audit.syslog,
            Some(("127.0.0.1:514".to_owned(), SyslogProtocol::Tcp))
        );
        assert_eq!(c.metrics_listen, None);
    }
}
