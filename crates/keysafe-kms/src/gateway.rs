//! The gateway's shared state, built from its configuration and a backend.

use crate::acl::{AclSet, Acls};
use crate::audit::Audit;
use crate::auth::{CookieSigner, DtManager, HttpAuthenticator, ProxyUsers, PseudoAuthenticator};
use crate::backend::KeyBackend;
use crate::config::KmsConfig;
use crate::deposits::DepositBackend;
use crate::groups::Groups;
use crate::kms::Kms;
use keysafe_client::{ClientHome, KeysafeClient};
use std::sync::Arc;

pub struct Gateway {
    pub kms: Arc<Kms>,
    pub acls: Arc<Acls>,
    pub key_authorization: bool,
    pub groups: Groups,
    pub proxy: ProxyUsers,
    pub cookies: CookieSigner,
    pub dt: DtManager,
    pub authenticator: Box<dyn HttpAuthenticator>,
    pub audit: Arc<Audit>,
    pub https: bool,
    /// `auth.danger_never_set_cookie`.
    pub never_set_cookie: bool,
}

impl Gateway {
    /// The production gateway: keys in keysafe deposits owned by the group `cfg.group`,
    /// encrypted on this host to the group. `home` is the gateway client's home (its age
    /// identity).
    pub async fn new(
        home: &ClientHome,
        client: KeysafeClient,
        cfg: &KmsConfig,
    ) -> anyhow::Result<Arc<Gateway>> {
        let backend = DepositBackend::open(home, client, &cfg.group).await?;
        backend.spawn_admitter(cfg.admit_interval);
        Self::with_backend(Arc::new(backend), cfg).await
    }

    pub async fn with_backend(
        backend: Arc<dyn KeyBackend>,
        cfg: &KmsConfig,
    ) -> anyhow::Result<Arc<Gateway>> {
        Self::with_authenticator(backend, cfg, Box::new(PseudoAuthenticator)).await
    }

    /// A gateway with another first-contact authentication scheme (the place for
    /// Kerberos/SPNEGO).
    pub async fn with_authenticator(
        backend: Arc<dyn KeyBackend>,
        cfg: &KmsConfig,
        authenticator: Box<dyn HttpAuthenticator>,
    ) -> anyhow::Result<Arc<Gateway>> {
        let acls = match &cfg.acl_file {
            Some(p) => Acls::from_file(p)?,
            None => Acls::fixed(AclSet::hadoop_defaults()),
        };
        acls.spawn_watcher();
        let cookies = CookieSigner::shared(&*backend, cfg.auth.token_validity)
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot set up the cookie-signing secret: {}", e.message)
            })?;
        let dt = DtManager::shared(backend.clone(), cfg.delegation_token.clone())
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot set up the delegation-token secret: {}", e.message)
            })?;
        let audit = Audit::open(cfg.audit_log.as_deref(), cfg.audit_aggregation_window)?;
        Ok(Arc::new(Gateway {
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
            never_set_cookie: cfg.auth.danger_never_set_cookie,
        }))
    }
}
