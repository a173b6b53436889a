//! The gateway's configuration file (TOML). Every field has Hadoop KMS's default; see docs/kms.md.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KmsConfig {
    /// Where to listen (`--listen` overrides). Hadoop's default port is 9600.
    pub listen: SocketAddr,
    /// HTTPS certificate chain and private key (PEM). Both or neither; without them, plain HTTP.
    pub tls: Option<TlsConfig>,
    /// `kms-acls.xml` in Hadoop's format, reloaded when it changes. Without it, Hadoop's shipped
    /// defaults apply (every operation and every default key ACL `*`).
    pub acl_file: Option<PathBuf>,
    /// `hadoop.kms.key.authorization.enable`.
    pub key_authorization: bool,
    /// The audit log (`kms-audit.log`); relative paths are relative to the client home.
    pub audit_log: Option<PathBuf>,
    /// `hadoop.kms.audit.aggregation.window.ms`.
    #[serde(with = "humantime_serde")]
    pub audit_aggregation_window: Duration,
    pub auth: AuthConfig,
    pub delegation_token: DtConfig,
    pub cache: CacheConfig,
    pub eek_queue: EekQueueConfig,
    pub groups: GroupsConfig,
    /// `hadoop.kms.proxyuser.<user>.users|groups|hosts`, keyed by the real (proxy) user.
    pub proxyuser: BTreeMap<String, ProxyUserConfig>,
    /// The keysafe group that owns the gateway's deposits; every gateway of the organisation
    /// is a member. The first gateway creates it.
    pub group: String,
    /// How often a gateway admits gateways an administrator added to the group.
    #[serde(with = "humantime_serde")]
    pub admit_interval: Duration,
}

impl Default for KmsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9600)),
            tls: None,
            acl_file: None,
            key_authorization: true,
            audit_log: Some(PathBuf::from("kms-audit.log")),
            audit_aggregation_window: Duration::from_secs(10),
            auth: AuthConfig::default(),
            delegation_token: DtConfig::default(),
            cache: CacheConfig::default(),
            eek_queue: EekQueueConfig::default(),
            groups: GroupsConfig::default(),
            proxyuser: BTreeMap::new(),
            group: "kms".to_owned(),
            admit_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `hadoop.kms.authentication.token.validity`: lifetime of the `hadoop.auth` cookie.
    #[serde(with = "humantime_serde")]
    pub token_validity: Duration,
    /// Never send the `hadoop.auth` cookie. Breaks every Hadoop client: exists only so tests can
    /// show the interoperability tests notice a server that omits it.
    pub danger_never_set_cookie: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_validity: Duration::from_secs(36000),
            danger_never_set_cookie: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DtConfig {
    /// `…delegation-token.renew-interval.sec`.
    #[serde(with = "humantime_serde")]
    pub renew_interval: Duration,
    /// `…delegation-token.max-lifetime.sec`.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl Default for DtConfig {
    fn default() -> Self {
        Self {
            renew_interval: Duration::from_secs(86400),
            max_lifetime: Duration::from_secs(604800),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// `hadoop.kms.cache.enable`.
    pub enable: bool,
    /// `hadoop.kms.cache.timeout.ms`: key versions and metadata.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `hadoop.kms.current.key.cache.timeout.ms`: the current version of each key.
    #[serde(with = "humantime_serde")]
    pub current_key_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enable: true,
            timeout: Duration::from_secs(600),
            current_key_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EekQueueConfig {
    /// `hadoop.security.kms.encrypted.key.cache.size`; 0 turns the queue off.
    pub size: usize,
    /// `…cache.low.watermark`.
    pub low_watermark: f64,
}

impl Default for EekQueueConfig {
    fn default() -> Self {
        Self {
            size: 100,
            low_watermark: 0.3,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    pub source: GroupSourceKind,
    /// For `source = "static"`: user → groups.
    pub users: BTreeMap<String, Vec<String>>,
    /// For `source = "host"`: how long to cache (`hadoop.security.groups.cache.secs`).
    #[serde(with = "humantime_serde")]
    pub cache: Duration,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self {
            source: GroupSourceKind::Static,
            users: BTreeMap::new(),
            cache: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupSourceKind {
    /// The `[groups.users]` table.
    Static,
    /// The host's `/etc/passwd` and `/etc/group`.
    Host,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyUserConfig {
    /// Users that may be impersonated: `*` or a comma-separated list.
    pub users: Option<String>,
    /// Groups whose members may be impersonated: `*` or a comma-separated list.
    pub groups: Option<String>,
    /// Client addresses the proxy user may connect from: `*`, IPs or IPv4 CIDRs, comma-separated.
    pub hosts: Option<String>,
}

impl KmsConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let c: KmsConfig = toml::from_str(text)?;
        if !(0.0..=1.0).contains(&c.eek_queue.low_watermark) {
            anyhow::bail!("eek_queue.low_watermark must be between 0 and 1");
        }
        keysafe_proto::GroupName::parse(&c.group)
            .map_err(|e| anyhow::anyhow!("group: {}", e.message()))?;
        if c.eek_queue.size > 10_000 {
            anyhow::bail!("eek_queue.size must be at most 10000");
        }
        Ok(c)
    }

    /// Resolves relative paths against `base` (the client home).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = &mut self.audit_log {
            fix(p);
        }
        if let Some(p) = &mut self.acl_file {
            fix(p);
        }
        if let Some(t) = &mut self.tls {
            fix(&mut t.cert);
            fix(&mut t.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_hadoops() {
        let c = KmsConfig::parse("").unwrap();
        assert_eq!(c.listen.port(), 9600);
        assert_eq!(c.cache.current_key_timeout, Duration::from_secs(30));
        assert_eq!(c.cache.timeout, Duration::from_secs(600));
        assert_eq!(c.auth.token_validity, Duration::from_secs(36000));
        assert_eq!(c.eek_queue.size, 100);
        assert!(c.key_authorization);
    }

    #[test]
    fn full_file() {
        let c = KmsConfig::parse(
            r#"
listen = "127.0.0.2:9700"
acl_file = "kms-acls.xml"
audit_log = "/var/log/kms-audit.log"
[tls]
cert = "cert.pem"
key = "key.pem"
[cache]
current_key_timeout = "5s"
[groups]
source = "static"
[groups.users]
alice = ["staff", "hdfs"]
[proxyuser.oozie]
users = "alice,bob"
hosts = "127.0.0.1"
"#,
        )
        .unwrap();
        assert_eq!(c.groups.users["alice"], vec!["staff", "hdfs"]);
        assert_eq!(c.proxyuser["oozie"].users.as_deref(), Some("alice,bob"));
        assert_eq!(c.cache.current_key_timeout, Duration::from_secs(5));
        assert!(KmsConfig::parse("nonsense = 1").is_err());
        assert!(KmsConfig::parse("group = \"no spaces allowed\"").is_err());
        assert_eq!(c.group, "kms");
        assert!(KmsConfig::parse("[eek_queue]\nlow_watermark = 2.0").is_err());
    }
}
