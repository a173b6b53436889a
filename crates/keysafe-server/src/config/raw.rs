//! The shape of `keysafe.toml` as serde reads it: one struct per section (`[storage]` and
//! `[cluster]` use their owners' structs), every key optional, unknown keys refused, and the
//! default each absent key takes. Values are only parsed here; the checks that make them a
//! validated configuration are made where it is built.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 11371;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:11371";

pub const DEFAULT_PKCS11_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) storage: keysafe_store::StorageSettings,
    #[serde(default)]
    pub(super) seal: RawSeal,
    #[serde(default)]
    pub(super) clients: RawClients,
    #[serde(default)]
    pub(super) registration: RawRegistration,
    #[serde(default)]
    pub(super) keyring: RawKeyring,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) cluster: crate::cluster::RawCluster,
    #[serde(default)]
    pub(super) backup: RawBackup,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBackup {
    pub(super) key_recipients: Vec<String>,
}

// ---- audit trail and metrics ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAudit {
    pub(super) node: String,
    pub(super) on_failure: String,
    pub(super) queue_capacity: usize,
    #[serde(with = "humantime_serde")]
    pub(super) checkpoint_interval: Duration,
    pub(super) file: PathBuf,
    pub(super) file_max_size: u64,
    pub(super) file_keep: u32,
    pub(super) syslog: String,
    pub(super) syslog_protocol: String,
    #[serde(with = "humantime_serde")]
    pub(super) anonymous_interval: Duration,
    pub(super) anonymous_per_source: u32,
    pub(super) anonymous_total: u32,
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
pub(super) struct RawMetrics {
    pub(super) listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN.into(),
        }
    }
}

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:11372";

// ---- end audit trail and metrics ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) listen: String,
    pub(super) hostname: String,
    pub(super) tls_cert: PathBuf,
    pub(super) tls_key: PathBuf,
    #[serde(with = "humantime_serde")]
    pub(super) tls_reload_interval: Duration,
    pub(super) tls_allow_key_change: bool,
    pub(super) tls_min_version: String,
    #[serde(with = "humantime_serde")]
    pub(super) handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) first_byte_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) body_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) http2_keep_alive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) http2_keep_alive_timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) max_connections_per_address: usize,
    #[serde(with = "humantime_serde")]
    pub(super) shutdown_grace: Duration,
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
pub(super) struct RawSeal {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) root_key_file: PathBuf,
    pub(super) pkcs11_module: PathBuf,
    pub(super) pkcs11_token: String,
    pub(super) pkcs11_key: String,
    pub(super) pkcs11_pin_file: Option<PathBuf>,
    pub(super) pkcs11_mode: String,
    #[serde(with = "humantime_serde")]
    pub(super) check_interval: Duration,
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
pub(super) struct RawKeyring {
    pub(super) rewrap_batch: u32,
    #[serde(with = "humantime_serde")]
    pub(super) rewrap_pause: Duration,
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
pub(super) struct RawLimits {
    pub(super) max_deposit_size: usize,
    #[serde(with = "humantime_serde")]
    pub(super) identity_cache_ttl: Duration,
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
pub(super) struct RawClients {
    #[serde(with = "humantime_serde")]
    pub(super) token_rotation: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) token_grace: Duration,
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
pub(super) struct RawRegistration {
    pub(super) failure_limit: u32,
    #[serde(with = "humantime_serde")]
    pub(super) failure_window: Duration,
    pub(super) pending_limit: u32,
    pub(super) pending_total: u64,
    #[serde(with = "humantime_serde")]
    pub(super) pending_window: Duration,
    pub(super) max_concurrent: usize,
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
pub(super) struct RawLog {
    pub(super) format: String,
    pub(super) level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}
