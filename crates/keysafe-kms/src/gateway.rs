//! The gateway's shared state, built from its configuration and a backend: the authenticator
//! the configuration names, ACLs, caches, delegation tokens, audit log, TLS, limits, health.

use crate::acl::{Acl, AclSet, Acls};
use crate::audit::Audit;
use crate::auth::{CookieSigner, HttpAuthenticator, ProxyUsers, PseudoAuthenticator};
use crate::backend::KeyBackend;
use crate::certauth::CertificateAuthenticator;
use crate::config::{AuthType, KmsConfig, LimitsConfig};
use crate::delegation::DtManager;
use crate::deposits::DepositBackend;
use crate::groups::Groups;
use crate::kerberos::SpnegoAuthenticator;
use crate::kms::Kms;
use crate::metrics::Health;
use crate::server::{Connections, TlsSource};
use keysafe_client::{ClientHome, KeysafeClient};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often token records that nobody can need any more are deleted.
const DT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often keysafe is probed for `/health`.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(10);

pub struct Gateway {
    pub kms: Arc<Kms>,
    pub acls: Arc<Acls>,
    pub key_authorization: bool,
    pub groups: Groups,
    pub proxy: ProxyUsers,
    pub cookies: CookieSigner,
    pub dt: Arc<DtManager>,
    pub authenticator: Box<dyn HttpAuthenticator>,
    pub audit: Arc<Audit>,
    pub https: bool,
    /// The HTTPS configuration (None: plain HTTP), reloadable.
    pub tls: Option<Arc<TlsSource>>,
    pub limits: LimitsConfig,
    pub connections: Arc<Connections>,
    pub health: Health,
    pub metrics: crate::metrics::GatewayMetrics,
    /// The keysafe group's founding recipient (production backend only).
    pub group_recipient: Option<String>,
    /// `auth.danger_never_set_cookie`.
    pub never_set_cookie: bool,
    config: KmsConfig,
}

/// The authenticator `cfg.auth` names.
pub fn authenticator(cfg: &KmsConfig) -> anyhow::Result<Box<dyn HttpAuthenticator>> {
    let a = &cfg.auth;
    Ok(match a.kind {
        AuthType::Pseudo => Box::new(PseudoAuthenticator),
        AuthType::Kerberos => {
            let (Some(principal), Some(keytab)) = (&a.principal, &a.keytab) else {
                anyhow::bail!("auth.type = \"kerberos\" needs auth.principal and auth.keytab");
            };
            Box::new(SpnegoAuthenticator::new(
                principal,
                keytab,
                cfg.name_rules()?,
            )?)
        }
        AuthType::Certificate => Box::new(CertificateAuthenticator::new(&a.certificate_rules)?),
    })
}

/// Idle connections to each keysafe server the gateway keeps. Key-cache misses of many Hadoop
/// clients at once each need a keysafe request: with fewer idle connections kept than requests
/// in flight, every request beyond them opens a new mutual-TLS connection and closes it after,
/// a handshake per miss. Well under keysafe's default of 256 connections per address.
const KEYSAFE_IDLE_CONNECTIONS: usize = 64;

impl Gateway {
    /// The keysafe client a gateway runs with: the home's identity, servers and pins, without
    /// the home's local deposit cache. The gateway asks a server on every read and keeps its own
    /// caches with Hadoop's timeouts, so a local cache would only ever be written (a file and two
    /// fsyncs per key read, the bulk of a key-cache miss) and never read.
    pub fn client_for(home: &ClientHome) -> Result<KeysafeClient, keysafe_client::ClientError> {
        KeysafeClient::from_home_with(
            home,
            &keysafe_client::ClientOptions {
                use_cache: false,
                pool_max_idle_per_host: KEYSAFE_IDLE_CONNECTIONS,
                ..Default::default()
            },
        )
    }

    /// The production gateway: keys in keysafe deposits owned by the group `cfg.group`,
    /// encrypted on this host to the group. `home` is the gateway client's home (its age
    /// identity).
    pub async fn new(
        home: &ClientHome,
        client: KeysafeClient,
        cfg: &KmsConfig,
    ) -> anyhow::Result<Arc<Gateway>> {
        cfg.validate()?;
        // The authenticator first: a wrong keytab stops the start before keysafe is touched.
        let auth = authenticator(cfg)?;
        let backend = DepositBackend::open(
            home,
            client,
            &cfg.group,
            cfg.keysafe.group_recipient.as_deref(),
        )
        .await?;
        backend.spawn_admitter(cfg.admit_interval);
        let recipient = backend.founding_recipient().to_owned();
        let gw = Self::build(Arc::new(backend), cfg, auth, Some(recipient)).await?;
        Ok(gw)
    }

    /// A gateway over any backend, with the authenticator the configuration names.
    pub async fn with_backend(
        backend: Arc<dyn KeyBackend>,
        cfg: &KmsConfig,
    ) -> anyhow::Result<Arc<Gateway>> {
        cfg.validate()?;
        let auth = authenticator(cfg)?;
        Self::build(backend, cfg, auth, None).await
    }

    /// A gateway with another first-contact authentication scheme.
    pub async fn with_authenticator(
        backend: Arc<dyn KeyBackend>,
        cfg: &KmsConfig,
        authenticator: Box<dyn HttpAuthenticator>,
    ) -> anyhow::Result<Arc<Gateway>> {
        Self::build(backend, cfg, authenticator, None).await
    }

    async fn build(
        backend: Arc<dyn KeyBackend>,
        cfg: &KmsConfig,
        authenticator: Box<dyn HttpAuthenticator>,
        group_recipient: Option<String>,
    ) -> anyhow::Result<Arc<Gateway>> {
        let admins = Acl::parse(&cfg.key_admins);
        let acls = match &cfg.acl_file {
            Some(p) => Acls::from_file(p, &admins)?,
            None => {
                if cfg.key_admins.trim().is_empty() {
                    tracing::warn!(
                        "no acl_file and no key_admins: every KMS operation is refused (see docs/kms.md)"
                    );
                }
                Acls::fixed(AclSet::admins_only(&admins))
            }
        };
        acls.spawn_watcher();
        let tls = match &cfg.tls {
            Some(t) => {
                let client_ca = match cfg.auth.kind {
                    AuthType::Certificate => cfg.auth.client_ca.as_deref(),
                    _ => None,
                };
                let s = TlsSource::load(t, client_ca)?;
                s.spawn_watcher();
                Some(s)
            }
            None => None,
        };
        let cookies = CookieSigner::shared(&*backend, cfg.auth.token_validity)
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot set up the cookie-signing secret: {}", e.message)
            })?;
        let dt = Arc::new(
            DtManager::shared(backend.clone(), cfg.delegation_token.clone())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot set up the delegation-token secret: {}", e.message)
                })?,
        );
        dt.spawn_pruner(DT_PRUNE_INTERVAL);
        let audit = Audit::open(cfg.audit_log.as_deref(), cfg.audit_aggregation_window)?;
        let health = Health::default();
        let gw = Arc::new(Gateway {
            kms: Arc::new(Kms::new(backend, cfg.cache.clone(), cfg.eek_queue.clone())),
            acls,
            key_authorization: cfg.key_authorization,
            groups: Groups::new(&cfg.groups),
            proxy: ProxyUsers::new(cfg.proxyuser.clone()),
            cookies,
            dt,
            authenticator,
            audit,
            https: cfg.tls.is_some(),
            tls,
            limits: cfg.limits.clone(),
            connections: Arc::new(Connections::default()),
            health,
            metrics: Default::default(),
            group_recipient,
            never_set_cookie: cfg.auth.danger_never_set_cookie,
            config: cfg.clone(),
        });
        crate::metrics::spawn_probe(&gw, HEALTH_PROBE_INTERVAL);
        Ok(gw)
    }

    /// See [`KmsConfig::check_listen`].
    pub fn check_listen(&self, addr: SocketAddr) -> anyhow::Result<()> {
        self.config.check_listen(addr)
    }

    /// SIGHUP: reopens the audit log (log rotation), re-reads the TLS certificate and the ACL
    /// file. Each part that fails keeps what it had and says why.
    pub fn reload(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = self.audit.reopen() {
            errors.push(format!("audit log: {e:#}"));
        }
        if let Some(t) = &self.tls
            && let Err(e) = t.reload()
        {
            errors.push(format!("TLS certificate: {e:#}"));
        }
        self.acls.reload_if_changed();
        errors
    }
}
