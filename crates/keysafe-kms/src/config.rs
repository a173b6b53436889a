//! The gateway's configuration file (TOML). Every field has Hadoop KMS's default; see docs/kms.md.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KmsConfig {
    /// Where to listen (`--listen` overrides). Hadoop's default port is 9600. Pseudo
    /// authentication is refused on anything but a loopback address (see
    /// `auth.insecure_pseudo_on_network`).
    pub listen: SocketAddr,
    /// HTTPS certificate chain and private key (PEM). Both or neither; without them, plain HTTP.
    /// Re-read on SIGHUP and when either file changes.
    pub tls: Option<TlsConfig>,
    /// `kms-acls.xml` in Hadoop's format, reloaded when it changes. Operation ACLs it does not
    /// set, and every ACL when there is no file, default to `key_admins` (not Hadoop's `*`).
    pub acl_file: Option<PathBuf>,
    /// The key administrators, in Hadoop's ACL syntax (`"users groups"`): the default of every
    /// `hadoop.kms.acl.*` and, without an ACL file, of every key ACL. Empty: nobody.
    pub key_admins: String,
    /// `hadoop.kms.key.authorization.enable`.
    pub key_authorization: bool,
    /// The audit log (`kms-audit.log`, created 0600); relative paths are relative to the client
    /// home. Reopened on SIGHUP (for log rotation).
    pub audit_log: Option<PathBuf>,
    /// `hadoop.kms.audit.aggregation.window.ms`.
    #[serde(with = "humantime_serde")]
    pub audit_aggregation_window: Duration,
    /// Health and Prometheus metrics (plain HTTP `GET /health`, `GET /metrics`); loopback by
    /// default. None: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// `text` or `json` (one object per line).
    pub log_format: LogFormat,
    /// The log filter (`info`, `debug`, `keysafe_kms=debug`); `KEYSAFE_LOG` overrides it.
    pub log_level: String,
    pub auth: AuthConfig,
    pub delegation_token: DtConfig,
    pub cache: CacheConfig,
    pub eek_queue: EekQueueConfig,
    pub groups: GroupsConfig,
    pub limits: LimitsConfig,
    /// `hadoop.kms.proxyuser.<user>.users|groups|hosts`, keyed by the real (proxy) user.
    pub proxyuser: BTreeMap<String, ProxyUserConfig>,
    /// The keysafe group that owns the gateway's deposits; every gateway of the organisation
    /// is a member. The first gateway creates it.
    pub group: String,
    /// How the gateway trusts the keysafe group it finds.
    pub keysafe: KeysafeConfig,
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
            key_admins: String::new(),
            key_authorization: true,
            audit_log: Some(PathBuf::from("kms-audit.log")),
            audit_aggregation_window: Duration::from_secs(10),
            metrics_listen: None,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            auth: AuthConfig::default(),
            delegation_token: DtConfig::default(),
            cache: CacheConfig::default(),
            eek_queue: EekQueueConfig::default(),
            groups: GroupsConfig::default(),
            limits: LimitsConfig::default(),
            proxyuser: BTreeMap::new(),
            group: "kms".to_owned(),
            keysafe: KeysafeConfig::default(),
            admit_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Trust in the keysafe group that holds the keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysafeConfig {
    /// The group's founding (epoch 1) age recipient, as the first gateway printed it when it
    /// created the group. A gateway adopts an existing group only if its epoch-1 identity has
    /// this recipient (or if this gateway created the group itself; it remembers that in its
    /// client home). Nobody can change a group's founding recipient after the fact.
    pub group_recipient: Option<String>,
}

/// Listener protections (the same kinds of limits as the keysafe server's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are closed at once.
    pub max_connections_per_address: usize,
    /// From accepting a connection to having the first request's headers (TLS handshake
    /// included).
    #[serde(with = "humantime_serde")]
    pub first_request_timeout: Duration,
    /// A keep-alive connection with no request in flight and nothing received is closed after
    /// this long; so is a request whose headers trickle in for longer.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The whole request body must arrive within this.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// The largest request body accepted from an authenticated caller (bytes). Bodies of
    /// requests that fail authentication are never read.
    pub max_body_bytes: usize,
    /// The largest request head (request line and headers; Kerberos tokens travel there).
    pub max_header_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_address: 256,
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_body_bytes: 16 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `hadoop.kms.authentication.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    /// The caller names itself (`user.name`): loopback only unless explicitly allowed.
    #[default]
    Pseudo,
    /// SPNEGO with the service keytab.
    Kerberos,
    /// HTTPS client certificates from `client_ca`, mapped to user names by `certificate_rules`.
    Certificate,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    #[serde(rename = "type")]
    pub kind: AuthType,
    /// `hadoop.kms.authentication.token.validity`: lifetime of the `hadoop.auth` cookie.
    #[serde(with = "humantime_serde")]
    pub token_validity: Duration,
    /// Accept pseudo authentication on a non-loopback address: anyone who reaches the port can
    /// then claim any user name.
    pub insecure_pseudo_on_network: bool,
    /// `…kerberos.principal`: `HTTP/host@REALM`, or `*` for every principal in the keytab.
    pub principal: Option<String>,
    /// `…kerberos.keytab`.
    pub keytab: Option<PathBuf>,
    /// `…kerberos.name.rules` (`hadoop.security.auth_to_local`).
    pub name_rules: String,
    /// `hadoop.security.auth_to_local.mechanism`: `hadoop` or `mit`.
    pub name_rules_mechanism: crate::kerberos::names::Mechanism,
    /// The realm whose principals `DEFAULT` maps to their first component; by default the
    /// realm of `principal`.
    pub default_realm: Option<String>,
    /// `type = "certificate"`: PEM file of the CA(s) that issue client certificates.
    pub client_ca: Option<PathBuf>,
    /// `type = "certificate"`: how a certificate becomes a user name; the first rule that
    /// matches wins. Without rules, the subject's common name is the user name.
    pub certificate_rules: Vec<CertificateRule>,
    /// Never send the `hadoop.auth` cookie. Breaks every Hadoop client: exists only so tests can
    /// show the interoperability tests notice a server that omits it.
    pub danger_never_set_cookie: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            kind: AuthType::Pseudo,
            token_validity: Duration::from_secs(36000),
            insecure_pseudo_on_network: false,
            principal: None,
            keytab: None,
            name_rules: "DEFAULT".to_owned(),
            name_rules_mechanism: crate::kerberos::names::Mechanism::Hadoop,
            default_realm: None,
            client_ca: None,
            certificate_rules: Vec::new(),
            danger_never_set_cookie: false,
        }
    }
}

/// One client-certificate mapping rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRule {
    /// What to match: `subject.cn`, `subject` (the whole RFC 4514 distinguished name),
    /// `san.dns`, `san.email` or `san.uri` (each SAN of that kind is tried in order).
    pub field: crate::certauth::CertField,
    /// A regular expression that must match the whole field.
    pub pattern: String,
    /// The user name, with `$1`, `${name}` for the pattern's groups.
    pub user: String,
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
    /// Who may get delegation tokens (Hadoop ACL syntax; `*` is every authenticated caller).
    pub acl: String,
    /// Tokens one user may get from one gateway per hour.
    pub max_per_user_per_hour: u32,
}

impl Default for DtConfig {
    fn default() -> Self {
        Self {
            renew_interval: Duration::from_secs(86400),
            max_lifetime: Duration::from_secs(604800),
            acl: "*".to_owned(),
            max_per_user_per_hour: 1000,
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
    /// How long a listing of the key names answers batch metadata requests for keys it does
    /// not hold (a missing key costs no keysafe request within this time).
    #[serde(with = "humantime_serde")]
    pub listing_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enable: true,
            timeout: Duration::from_secs(600),
            current_key_timeout: Duration::from_secs(30),
            listing_timeout: Duration::from_secs(2),
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
        c.validate()?;
        Ok(c)
    }

    /// Checks what a file alone can get wrong (paths are checked when they are opened).
    pub fn validate(&self) -> anyhow::Result<()> {
        let a = &self.auth;
        match a.kind {
            AuthType::Kerberos => {
                if a.keytab.is_none() {
                    anyhow::bail!("auth.type = \"kerberos\" needs auth.keytab");
                }
                let p = a.principal.as_deref().unwrap_or("");
                if p.is_empty() {
                    anyhow::bail!(
                        "auth.type = \"kerberos\" needs auth.principal (HTTP/host@REALM, or \"*\")"
                    );
                }
                self.name_rules()?;
            }
            AuthType::Certificate => {
                if self.tls.is_none() {
                    anyhow::bail!("auth.type = \"certificate\" needs HTTPS: add a [tls] section");
                }
                if a.client_ca.is_none() {
                    anyhow::bail!(
                        "auth.type = \"certificate\" needs auth.client_ca (the PEM of the CA that issues client certificates)"
                    );
                }
                crate::certauth::CertMapper::new(&a.certificate_rules)?;
            }
            AuthType::Pseudo => {}
        }
        if self.limits.max_connections == 0 || self.limits.max_connections_per_address == 0 {
            anyhow::bail!(
                "limits.max_connections and max_connections_per_address must be at least 1"
            );
        }
        if self.limits.max_body_bytes < 1024 || self.limits.max_header_bytes < 8192 {
            anyhow::bail!(
                "limits.max_body_bytes must be at least 1024 and max_header_bytes at least 8192"
            );
        }
        Ok(())
    }

    /// The parsed `auth.name_rules` (Kerberos).
    pub fn name_rules(&self) -> anyhow::Result<crate::kerberos::names::NameRules> {
        let a = &self.auth;
        let realm = match (&a.default_realm, a.principal.as_deref()) {
            (Some(r), _) => r.clone(),
            (None, Some(p)) if p.contains('@') => p
                .rsplit_once('@')
                .map(|(_, r)| r.to_owned())
                .unwrap_or_default(),
            _ => {
                if a.name_rules.contains("DEFAULT") {
                    anyhow::bail!(
                        "auth.name_rules uses DEFAULT but no realm is known: set auth.default_realm"
                    );
                }
                String::new()
            }
        };
        crate::kerberos::names::NameRules::parse(&a.name_rules, a.name_rules_mechanism, &realm)
            .map_err(|e| anyhow::anyhow!("auth.name_rules: {e}"))
    }

    /// Refuses pseudo authentication on a listener others can reach, unless the operator said
    /// so by name (`auth.insecure_pseudo_on_network`).
    pub fn check_listen(&self, addr: SocketAddr) -> anyhow::Result<()> {
        if self.auth.kind == AuthType::Pseudo
            && !addr.ip().is_loopback()
            && !self.auth.insecure_pseudo_on_network
        {
            anyhow::bail!(
                "refusing to serve pseudo authentication on {addr}: anyone who can reach it could \
                 claim any user name. Use [auth] type = \"kerberos\" or \"certificate\", listen on \
                 a loopback address, or (at your own risk) set auth.insecure_pseudo_on_network = true"
            );
        }
        Ok(())
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
        if let Some(p) = &mut self.auth.keytab {
            fix(p);
        }
        if let Some(p) = &mut self.auth.client_ca {
            fix(p);
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

    #[test]
    fn auth_sections_are_checked() {
        let k = KmsConfig::parse(
            "[auth]\ntype = \"kerberos\"\nprincipal = \"HTTP/kms.example.com@EXAMPLE.COM\"\nkeytab = \"/etc/kms.keytab\"\nname_rules = \"RULE:[1:$1@$0](.*@EXAMPLE\\\\.COM)s/@.*//\\nDEFAULT\"\n",
        )
        .unwrap();
        assert_eq!(k.auth.kind, AuthType::Kerberos);
        assert_eq!(
            k.name_rules()
                .unwrap()
                .short_name("bob@EXAMPLE.COM")
                .unwrap(),
            "bob"
        );
        // Kerberos without a keytab or principal, DEFAULT without a realm, bad rules.
        assert!(KmsConfig::parse("[auth]\ntype = \"kerberos\"\nprincipal = \"HTTP/x@R\"").is_err());
        assert!(KmsConfig::parse("[auth]\ntype = \"kerberos\"\nkeytab = \"k\"").is_err());
        assert!(
            KmsConfig::parse("[auth]\ntype = \"kerberos\"\nkeytab = \"k\"\nprincipal = \"*\"")
                .is_err()
        );
        assert!(
            KmsConfig::parse(
                "[auth]\ntype = \"kerberos\"\nkeytab = \"k\"\nprincipal = \"*\"\ndefault_realm = \"R\""
            )
            .is_ok()
        );
        assert!(
            KmsConfig::parse(
                "[auth]\ntype = \"kerberos\"\nkeytab = \"k\"\nprincipal = \"HTTP/x@R\"\nname_rules = \"RULE:[x]\""
            )
            .is_err()
        );
        // Certificates need HTTPS and a CA.
        assert!(
            KmsConfig::parse("[auth]\ntype = \"certificate\"\nclient_ca = \"ca.pem\"").is_err()
        );
        assert!(
            KmsConfig::parse("[tls]\ncert = \"c\"\nkey = \"k\"\n[auth]\ntype = \"certificate\"")
                .is_err()
        );
        assert!(KmsConfig::parse("[auth]\ntype = \"ldap\"").is_err());
    }

    /// Every TOML example of docs/kms.md is a configuration the gateway accepts.
    #[test]
    fn the_documented_examples_parse() {
        let doc = include_str!("../../../docs/kms.md");
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap_or(""))
            .collect();
        assert!(blocks.len() >= 3, "{}", blocks.len());
        for b in &blocks {
            let c = KmsConfig::parse(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
            if c.auth.kind == AuthType::Kerberos {
                let r = c.name_rules().unwrap();
                assert_eq!(r.short_name("nn/host1@EXAMPLE.COM").unwrap(), "hdfs");
                assert_eq!(r.short_name("alice@EXAMPLE.COM").unwrap(), "alice");
            }
        }
    }

    #[test]
    fn pseudo_only_on_loopback() {
        let c = KmsConfig::default();
        assert!(c.check_listen("127.0.0.1:9600".parse().unwrap()).is_ok());
        assert!(c.check_listen("[::1]:9600".parse().unwrap()).is_ok());
        let e = c.check_listen("0.0.0.0:9600".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("insecure_pseudo_on_network"), "{e}");
        assert!(c.check_listen("10.1.2.3:9600".parse().unwrap()).is_err());
        let mut open = c.clone();
        open.auth.insecure_pseudo_on_network = true;
        assert!(open.check_listen("0.0.0.0:9600".parse().unwrap()).is_ok());
        let mut krb = c;
        krb.auth.kind = AuthType::Kerberos;
        assert!(krb.check_listen("0.0.0.0:9600".parse().unwrap()).is_ok());
    }
}
