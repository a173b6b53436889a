//! PostgreSQL connection settings: a libpq-style URL, parsed and checked once, and a password
//! that never travels in the URL (the storage configuration reads it from a file or the
//! environment). Nothing here prints a password: [`PgPassword`] and
//! [`PgConfig`] redact it in `Debug`, and a URL that carries one is refused (URLs end up in
//! command lines, configuration files and logs).
//!
//! Understood: `postgres://USER@HOST[:PORT][,HOST2[:PORT]...]/DB?PARAMS` where PARAMS are
//! libpq's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`),
//! `sslrootcert`, and whatever tokio-postgres understands (`target_session_attrs`,
//! `connect_timeout`, `application_name`, `keepalives_idle`, `load_balance_hosts`, ...).

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;
use tokio_postgres::config::{Host, TargetSessionAttrs};
use zeroize::Zeroizing;

/// Why a PostgreSQL URL or password was refused. Messages never contain the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgConfigError {
    #[error("the PostgreSQL URL must start with postgres:// or postgresql://")]
    NotAUrl,
    #[error(
        "the PostgreSQL URL contains a password; remove it and pass the password from a file \
         or an environment variable instead (URLs end up in logs and process lists)"
    )]
    PasswordInUrl,
    #[error("the PostgreSQL URL names no host")]
    NoHost,
    #[error("the PostgreSQL URL names no database")]
    NoDatabase,
    #[error("invalid PostgreSQL URL: {0}")]
    Invalid(String),
    #[error(
        "sslmode={0} needs sslrootcert=/path/to/ca.pem (the CA that signed the server's certificate)"
    )]
    RootCertMissing(&'static str),
    #[error("cannot read the CA certificates in {path}: {reason}")]
    RootCert { path: PathBuf, reason: String },
    #[error("{param} is not supported (client certificates for PostgreSQL are not implemented)")]
    Unsupported { param: String },
}

/// A PostgreSQL password, zeroised when dropped and never printed.
#[derive(Clone)]
pub struct PgPassword(Zeroizing<String>);

impl PgPassword {
    pub fn new(password: String) -> Self {
        Self(Zeroizing::new(password))
    }
}

impl From<Zeroizing<String>> for PgPassword {
    fn from(p: Zeroizing<String>) -> Self {
        Self(p)
    }
}

impl fmt::Debug for PgPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PgPassword([redacted])")
    }
}

/// libpq's `sslmode`. Only `verify-full` authenticates the server (its certificate chains to
/// `sslrootcert` and names the host); `verify-ca` checks the chain only; `prefer` and
/// `require` encrypt without knowing whom to (unless `sslrootcert` is given, when they check
/// the chain as `verify-ca` does); `prefer` also falls back to plain text if the server
/// offers no TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, PgConfigError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(PgConfigError::Invalid(format!(
                    "sslmode={other} (expected disable, prefer, require, verify-ca or verify-full)"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Connections a store opens at most (reads plus the writer's one), unless set otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// How long a write waits for a lock, unless set otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// TCP keepalive and user timeout, unless the URL sets them: a database host that vanished
/// without closing its connections (power loss, a partition) is noticed in about half a
/// minute, not after the kernel's two hours, so a failover is not held up by dead sockets.
const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_KEEPALIVE_RETRIES: u32 = 3;
const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one host may take to accept a connection before the next host is tried, unless
/// the URL sets `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Validated settings for [`super::PostgresStore`].
#[derive(Clone)]
pub struct PgConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) ssl_mode: SslMode,
    pub(crate) root_certs: Vec<CertificateDer<'static>>,
    root_cert_path: Option<PathBuf>,
    pub(crate) pool_size: usize,
    pub(crate) lock_timeout: Duration,
    target: String,
}

impl PgConfig {
    /// Parses a `postgres://` URL (which must not carry a password) and takes the password, if
    /// the server asks for one, separately.
    pub fn parse(url: &str, password: Option<PgPassword>) -> Result<Self, PgConfigError> {
        let rest = ["postgres://", "postgresql://"]
            .iter()
            .find_map(|p| url.strip_prefix(p))
            .ok_or(PgConfigError::NotAUrl)?;
        let (base, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        // `user:password@`, checked before anything else so no later error can quote it.
        let authority = base.split('/').next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(PgConfigError::PasswordInUrl);
        }
        let mut ssl_mode = SslMode::Prefer;
        let mut root_cert_path = None;
        let mut kept: Vec<&str> = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k)?;
            match key.as_str() {
                "password" => return Err(PgConfigError::PasswordInUrl),
                "sslmode" => ssl_mode = SslMode::parse(&decode(v)?)?,
                "sslrootcert" => root_cert_path = Some(PathBuf::from(decode(v)?)),
                "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                    return Err(PgConfigError::Unsupported { param: key });
                }
                _ => kept.push(pair),
            }
        }
        let mut rebuilt = format!("postgres://{base}");
        if !kept.is_empty() {
            rebuilt.push('?');
            rebuilt.push_str(&kept.join("&"));
        }
        // tokio-postgres' parse errors name the offending option, never echo the URL.
        let mut pg = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            PgConfigError::Invalid(format!("{e}{cause}"))
        })?;
        if pg.get_password().is_some() {
            return Err(PgConfigError::PasswordInUrl);
        }
        if pg.get_hosts().is_empty() {
            return Err(PgConfigError::NoHost);
        }
        if pg.get_dbname().is_none_or(str::is_empty) {
            return Err(PgConfigError::NoDatabase);
        }
        if let Some(p) = &password {
            pg.password(p.0.as_bytes());
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        let given = |name: &str| {
            kept.iter()
                .any(|p| p.split('=').next().is_some_and(|k| k == name))
        };
        if !given("keepalives_idle") {
            pg.keepalives_idle(DEFAULT_KEEPALIVE_IDLE);
        }
        if !given("keepalives_interval") {
            pg.keepalives_interval(DEFAULT_KEEPALIVE_INTERVAL);
        }
        if !given("keepalives_retries") {
            pg.keepalives_retries(DEFAULT_KEEPALIVE_RETRIES);
        }
        if pg.get_tcp_user_timeout().is_none() {
            pg.tcp_user_timeout(DEFAULT_TCP_USER_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("keysafe");
        }
        pg.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let root_certs = match &root_cert_path {
            Some(path) => load_roots(path)?,
            None if matches!(ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                return Err(PgConfigError::RootCertMissing(ssl_mode.as_str()));
            }
            None => Vec::new(),
        };
        let target = describe(&pg, ssl_mode);
        Ok(Self {
            pg,
            ssl_mode,
            root_certs,
            root_cert_path,
            pool_size: DEFAULT_POOL_SIZE,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            target,
        })
    }

    /// At most `n` connections (at least 2: the writer keeps one while readers use others).
    pub fn with_pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(2);
        self
    }

    /// How long a write transaction waits for a lock (the audit chain's head, a row) before
    /// it fails with `Unavailable`. A session holding one that long is stuck (a hung node, a
    /// commit waiting for an absent synchronous standby); the caller is better told so than
    /// left waiting. At least 1 ms.
    pub fn with_lock_timeout(mut self, t: Duration) -> Self {
        self.lock_timeout = t.max(Duration::from_millis(1));
        self
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// Whether connections must reach a server that accepts writes
    /// (`target_session_attrs=read-write`).
    pub fn requires_read_write(&self) -> bool {
        self.pg.get_target_session_attrs() == TargetSessionAttrs::ReadWrite
    }

    /// `user@host:port,host2:port/db (sslmode=...)`: what to print in logs and status.
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("target", &self.target)
            .field("password", &self.pg.get_password().map(|_| "[redacted]"))
            .field("sslrootcert", &self.root_cert_path)
            .field("target_session_attrs", &self.pg.get_target_session_attrs())
            .field("pool_size", &self.pool_size)
            .field("lock_timeout", &self.lock_timeout)
            .finish()
    }
}

impl fmt::Display for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target)
    }
}

fn decode(s: &str) -> Result<String, PgConfigError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| PgConfigError::Invalid("a query parameter is not UTF-8".into()))
}

fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, PgConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| PgConfigError::RootCert {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PgConfigError::RootCert {
            path: path.to_owned(),
            reason: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

fn describe(pg: &tokio_postgres::Config, ssl: SslMode) -> String {
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports
                .get(i)
                .or(if ports.len() == 1 {
                    ports.first()
                } else {
                    None
                })
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let mut out = String::new();
    if let Some(user) = pg.get_user() {
        out.push_str(user);
        out.push('@');
    }
    out.push_str(&hosts.join(","));
    out.push('/');
    out.push_str(pg.get_dbname().unwrap_or_default());
    out.push_str(&format!(" (sslmode={}", ssl.as_str()));
    if pg.get_target_session_attrs() == TargetSessionAttrs::ReadWrite {
        out.push_str(", target_session_attrs=read-write");
    }
    out.push(')');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn multi_host_urls_parse_and_describe_without_secrets() {
        let c = PgConfig::parse(
            "postgres://keysafe@db1:5433,db2/keysafe?target_session_attrs=read-write&sslmode=require",
            Some(PgPassword::new("s3cret-pw".into())),
        )
        .unwrap();
        assert_eq!(
            c.target(),
            "keysafe@db1:5433,db2:5432/keysafe (sslmode=require, target_session_attrs=read-write)"
        );
        assert!(c.requires_read_write());
        assert_eq!(c.ssl_mode(), SslMode::Require);
        assert_eq!(c.pg.get_password(), Some(&b"s3cret-pw"[..]));
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("[redacted]"));
        assert!(!format!("{:?}", PgPassword::new("s3cret-pw".into())).contains("s3cret"));
    }

    #[test]
    fn dead_hosts_are_noticed_in_seconds_unless_the_url_says_otherwise() {
        let c = PgConfig::parse("postgres://u@db/x", None).unwrap();
        assert_eq!(c.pg.get_keepalives_idle(), DEFAULT_KEEPALIVE_IDLE);
        assert_eq!(c.pg.get_tcp_user_timeout(), Some(&DEFAULT_TCP_USER_TIMEOUT));
        assert_eq!(c.pg.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        let c = PgConfig::parse(
            "postgres://u@db/x?keepalives_idle=600&tcp_user_timeout=90&connect_timeout=3",
            None,
        )
        .unwrap();
        assert_eq!(c.pg.get_keepalives_idle(), Duration::from_secs(600));
        assert_eq!(c.pg.get_tcp_user_timeout(), Some(&Duration::from_secs(90)));
        assert_eq!(c.pg.get_connect_timeout(), Some(&Duration::from_secs(3)));
    }

    #[test]
    fn passwords_in_urls_are_refused_without_echoing_them() {
        for url in [
            "postgres://keysafe:hunter2@db/keysafe",
            "postgres://keysafe@db/keysafe?password=hunter2",
            "postgresql://keysafe@db/keysafe?sslmode=disable&password=hunter2",
            "postgres://keysafe:hunter2@db1,db2:bad-port/keysafe",
        ] {
            let e = PgConfig::parse(url, None).unwrap_err();
            assert_eq!(e, PgConfigError::PasswordInUrl, "{url}");
            assert!(!e.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn bad_urls_get_clear_errors() {
        let err = |u: &str| PgConfig::parse(u, None).unwrap_err();
        assert_eq!(err("mysql://db/x"), PgConfigError::NotAUrl);
        assert_eq!(err("postgres://u@db"), PgConfigError::NoDatabase);
        assert_eq!(err("postgres:///x"), PgConfigError::NoHost);
        assert!(matches!(
            err("postgres://u@db/x?sslmode=allow"),
            PgConfigError::Invalid(_)
        ));
        assert!(matches!(
            err("postgres://u@db/x?no_such_option=1"),
            PgConfigError::Invalid(m) if m.contains("no_such_option")
        ));
        assert_eq!(
            err("postgres://u@db/x?sslmode=verify-full"),
            PgConfigError::RootCertMissing("verify-full")
        );
        assert!(matches!(
            err("postgres://u@db/x?sslmode=verify-full&sslrootcert=/nonexistent.pem"),
            PgConfigError::RootCert { .. }
        ));
        assert!(matches!(
            err("postgres://u@db/x?sslcert=/c.pem"),
            PgConfigError::Unsupported { .. }
        ));
    }
}
