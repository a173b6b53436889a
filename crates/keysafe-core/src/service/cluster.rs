//! The service's part in a cluster of nodes over one database: following changes other nodes
//! made to what this one caches (docs/adr/0011-change-propagation.md), announcing that this
//! node's seal key is gone, and the cluster's TLS identity, kept in the database wrapped by the
//! keyring so that a node joining the cluster serves the same key (ADR 0010). Nothing here
//! talks to other nodes directly: everything goes through the store.

use super::{Caller, Service};
use crate::crypto::{self, AadBuilder, SecretKey};
use crate::error::CoreError;
use crate::store::{
    Change, ClusterIdentityRecord, Mutation, NodeId, NodeRecord, ReplicaInfo, StoreError,
};
use keysafe_proto::ClientFingerprint;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The associated data of the cluster TLS key's data key and of the key itself: bound to the
/// fingerprint of its public key, so a row cannot be swapped for another identity's.
pub fn cluster_key_aad(fingerprint: &ClientFingerprint) -> Vec<u8> {
    AadBuilder::new("keysafe/cluster-tls-key/v1")
        .field(fingerprint.as_str().as_bytes())
        .finish()
}

/// The cluster's TLS identity, opened: the certificate chain and the private key, PEM.
pub struct ClusterTls {
    pub cert_pem: String,
    pub key_pem: Zeroizing<Vec<u8>>,
    pub fingerprint: ClientFingerprint,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("fingerprint", &self.fingerprint)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// What a node reports about its seal in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealReport {
    /// `unsealed` or `sealed`.
    pub state: &'static str,
    pub reason: Option<String>,
}

impl Service {
    /// Applies a change another node announced: forgets the cached identities it names,
    /// reloads the keyring, or checks the seal's key. `None` (a change this version does not
    /// know) and [`Service::resync`] forget everything.
    pub async fn apply_change(&self, change: Option<&Change>) {
        match change {
            Some(Change::Client(fp)) => self.forget_identity(fp),
            Some(Change::Clients) => self.forget_all_identities(),
            Some(Change::Keyring) => self.reload_after_change().await,
            Some(Change::Seal) => {
                // Each node asks its own seal (its own HSM session): a destroyed key seals
                // every node that uses it, and only those.
                self.check_seal().await;
            }
            None => self.resync().await,
        }
    }

    /// Forgets everything cached that another node may have changed, and reloads the keyring:
    /// for announcements that may have been missed (a reconnect, a change serial that moved
    /// without an announcement).
    pub async fn resync(&self) {
        self.forget_all_identities();
        self.reload_after_change().await;
    }

    async fn reload_after_change(&self) {
        if self.is_sealed() {
            return;
        }
        if let Err(e) = self.reload_keyring().await {
            tracing::warn!(error = %e, "cannot reload the keyring after a change elsewhere");
        }
    }

    pub(super) fn forget_all_identities(&self) {
        if let Ok(mut map) = self.identities.write() {
            map.clear();
        }
    }

    /// Counts and announces a change that no mutation makes (this node found its seal key
    /// destroyed), so that the other nodes act on it now rather than at their next seal check.
    pub async fn announce(&self, change: Change) -> Result<(), CoreError> {
        self.store
            .apply(Mutation::Announce(change))
            .await
            .map(|_| ())
            .map_err(|e| CoreError::from_store(e, "change"))
    }

    /// Resolves when this process finds its seal's key destroyed (and seals itself for good).
    pub async fn seal_key_destroyed(&self) {
        loop {
            if self.is_shredded() {
                return;
            }
            self.sealing.shredded_event.notified().await;
        }
    }

    /// The seal's state for the heartbeat.
    pub fn seal_report(&self) -> SealReport {
        if self.is_sealed() {
            SealReport {
                state: "sealed",
                reason: self.sealed_reason(),
            }
        } else {
            SealReport {
                state: "unsealed",
                reason: None,
            }
        }
    }

    /// `keysafe admin cluster status`: every node's last heartbeat and the database's
    /// standbys.
    pub async fn cluster_nodes(
        &self,
        caller: &Caller,
    ) -> Result<(Vec<NodeRecord>, Vec<ReplicaInfo>), CoreError> {
        caller.require_admin()?;
        let nodes = self.store.list_nodes().await?;
        let replicas = match self.store.replication().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the database's replication state");
                Vec::new()
            }
        };
        Ok((nodes, replicas))
    }

    /// `keysafe admin cluster remove NODE`: forgets a node that is gone for good (a node still
    /// running writes its row again at its next heartbeat).
    pub async fn remove_node(&self, caller: &Caller, id: &NodeId) -> Result<(), CoreError> {
        caller.require_admin()?;
        self.apply_audited(Mutation::RemoveNode { id: id.clone() })
            .await
            .map(|_| ())
            .map_err(|e| CoreError::from_store(e, "node"))
    }

    /// Records this node's heartbeat.
    pub async fn heartbeat(&self, node: NodeRecord) -> Result<(), CoreError> {
        self.store
            .apply(Mutation::UpsertNode(node))
            .await
            .map(|_| ())
            .map_err(|e| CoreError::from_store(e, "node"))
    }

    /// Stores the cluster's TLS identity (the first node's certificate and key), the key
    /// encrypted under a fresh data key that the current keyring version wraps. Refused
    /// (`AlreadyExists`) when the cluster has one.
    pub async fn store_cluster_identity(
        &self,
        cert_pem: &str,
        key_pem: &[u8],
    ) -> Result<ClientFingerprint, CoreError> {
        let ring = self.keyring()?;
        let leaf = leaf_certificate(cert_pem)?;
        let fingerprint = ClientFingerprint::of_certificate(&leaf)
            .map_err(|e| CoreError::InvalidInput(format!("the TLS certificate: {e}")))?;
        let aad = cluster_key_aad(&fingerprint);
        let dek = SecretKey::generate()?;
        let sealed_key = crypto::seal(&dek, &aad, key_pem)?;
        let (kek_version, wrapped_dek) = self.wrap_dek(&ring, aad, &dek).await?;
        self.store
            .apply(Mutation::InsertClusterIdentity(ClusterIdentityRecord {
                cert_pem: cert_pem.to_owned(),
                fingerprint: fingerprint.clone(),
                kek_version,
                wrapped_dek,
                sealed_key,
                created_at: self.clock.now(),
            }))
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists => CoreError::AlreadyExists("cluster TLS identity"),
                other => CoreError::from_store(other, "cluster TLS identity"),
            })?;
        Ok(fingerprint)
    }

    /// The cluster's TLS identity, opened with the keyring (so only a process that holds the
    /// seal gets the key); `None` when none is stored. A row that does not open, or whose
    /// certificate is not the fingerprint it claims, is an integrity error.
    pub async fn cluster_identity(&self) -> Result<Option<ClusterTls>, CoreError> {
        let Some(rec) = self.store.cluster_identity().await? else {
            return Ok(None);
        };
        let ring: Arc<crate::keyring::Keyring> = self.keyring()?;
        let leaf = leaf_certificate(&rec.cert_pem).map_err(|_| {
            CoreError::Integrity("the cluster TLS certificate does not parse".into())
        })?;
        let actual = ClientFingerprint::of_certificate(&leaf).map_err(|_| {
            CoreError::Integrity("the cluster TLS certificate does not parse".into())
        })?;
        if actual != rec.fingerprint {
            return Err(CoreError::Integrity(
                "the cluster TLS certificate is not the one its key was stored for".into(),
            ));
        }
        let aad = cluster_key_aad(&rec.fingerprint);
        let dek = self
            .unwrap_dek(
                &ring,
                rec.kek_version,
                aad.clone(),
                &rec.wrapped_dek,
                || "the cluster TLS key's data key".to_owned(),
            )
            .await?;
        let key_pem = Zeroizing::new(crypto::open(&dek, &aad, &rec.sealed_key)?);
        Ok(Some(ClusterTls {
            cert_pem: rec.cert_pem,
            key_pem,
            fingerprint: rec.fingerprint,
        }))
    }
}

/// The first certificate of a PEM chain, DER.
fn leaf_certificate(pem: &str) -> Result<Vec<u8>, CoreError> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| CoreError::InvalidInput("the TLS certificate is not PEM".into()))?;
    if der.is_empty() {
        return Err(CoreError::InvalidInput(
            "no certificate in the TLS certificate file".into(),
        ));
    }
    Ok(der)
}
