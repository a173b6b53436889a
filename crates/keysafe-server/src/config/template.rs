//! The documented `keysafe.toml` template that `init` writes and `keysafe serve
//! --print-default-config` prints, and the `[seal]` and `[storage]` values written into it.

use super::raw::DEFAULT_PKCS11_MODULE;
use std::net::SocketAddr;
use std::path::PathBuf;

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
