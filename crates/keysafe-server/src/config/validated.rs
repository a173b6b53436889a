//! The validated [`Config`]: how `keysafe.toml` becomes it (`Config::load` and `Config::parse`
//! check every value and turn the raw sections into typed ones) and what the server derives
//! from it (the domain limits, the local URL).

use super::raw::RawConfig;
use super::sections::{
    AnonymousSampling, AuditConfig, AuditFailurePolicy, BackupConfig, LogFormat, SealConfig,
    SyslogProtocol, TlsMinVersion,
};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CONFIG_FILE: &str = "keysafe.toml";

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
    use super::super::raw::DEFAULT_METRICS_LISTEN;
    use super::*;

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
