//! The typed values of single settings and sections that the validated configuration holds:
//! the backup, audit trail, TLS version, log format and seal settings.

use std::path::PathBuf;
use std::time::Duration;

/// `[backup]`: what backups over the API may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupConfig {
    /// The only age recipients a backup over the API may carry key-bearing files to.
    pub key_recipients: Vec<String>,
}

// ---- audit trail and metrics ----

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
