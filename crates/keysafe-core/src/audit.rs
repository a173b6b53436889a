//! The audit trail's domain side: the per-request audit scope (who, what, from where) that the
//! server opens around each request, and the audit signing key that signs checkpoints of the
//! hash chain. It never records payloads, keys, secrets or tokens: an event is built from the
//! connection, the route and the names the request touched.
//!
//! A write carries the request's event to the store with its mutation
//! ([`crate::Store::apply_audited`]), so the entry commits in the same transaction as the change.
//! A request that wrote nothing (a read, a refusal) is recorded by the server after it answered,
//! through its batching queue. Each request is recorded once: the scope remembers whether a
//! write took the event.

use crate::crypto::{AadBuilder, SecretKey};
use crate::error::CoreError;
use crate::keyring::Keyring;
use crate::store::{AuditKeyRecord, Mutation, Store, StoreError};
use base64::Engine;
use keysafe_proto::Timestamp;
use keysafe_proto::audit::{AuditCheckpoint, AuditEvent, checkpoint_message, key_id};
use std::future::Future;
use std::sync::{Arc, Mutex};

tokio::task_local! {
    static SCOPE: Arc<AuditScope>;
}

/// The audit record of one request while it is being served.
#[derive(Debug)]
pub struct AuditScope {
    state: Mutex<ScopeState>,
}

#[derive(Debug)]
struct ScopeState {
    event: AuditEvent,
    /// A committed write carried the event: the server must not record it again.
    recorded: bool,
}

impl AuditScope {
    pub fn new(event: AuditEvent) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(ScopeState {
                event,
                recorded: false,
            }),
        })
    }

    /// Runs `f` (the request's handler) with this scope current.
    pub async fn run<F: Future>(self: Arc<Self>, f: F) -> F::Output {
        SCOPE.scope(self, f).await
    }

    pub fn is_recorded(&self) -> bool {
        self.state.lock().map(|s| s.recorded).unwrap_or(false)
    }

    /// The event, moved out for the server to record once the request is answered; `None` when
    /// a write carried it already. Later notes change an empty event that nobody records.
    pub fn take_unrecorded(&self) -> Option<AuditEvent> {
        let mut s = self.state.lock().ok()?;
        if s.recorded {
            return None;
        }
        Some(std::mem::take(&mut s.event))
    }

    pub fn update(&self, f: impl FnOnce(&mut AuditEvent)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s.event);
        }
    }
}

/// Adds detail to the current request's event (no-op outside a request).
pub fn note(f: impl FnOnce(&mut AuditEvent)) {
    let _ = SCOPE.try_with(|s| s.update(f));
}

/// The event a write of the current request carries, with outcome `ok`; `None` outside a request
/// or when an earlier write of the request carried it already.
pub(crate) fn event_for_write() -> Option<AuditEvent> {
    SCOPE
        .try_with(|s| {
            let st = s.state.lock().ok()?;
            if st.recorded {
                return None;
            }
            let mut e = st.event.clone();
            e.outcome = "ok".into();
            Some(e)
        })
        .ok()
        .flatten()
}

/// Marks the current request as recorded (its write committed with the event).
pub(crate) fn mark_recorded() {
    let _ = SCOPE.try_with(|s| {
        if let Ok(mut st) = s.state.lock() {
            st.recorded = true;
        }
    });
}

const SIGNING_KEY_AAD: &str = "keysafe/audit-signing-key/v1";

pub(crate) fn signing_key_aad(public_key: &[u8]) -> Vec<u8> {
    AadBuilder::new(SIGNING_KEY_AAD).field(public_key).finish()
}

/// The Ed25519 key that signs checkpoints. Its 32-byte seed is stored wrapped by the keyring
/// (like a data key), so it is only usable while the server is unsealed.
pub struct AuditSigner {
    pair: aws_lc_rs::signature::Ed25519KeyPair,
    public: Vec<u8>,
    key_id: String,
    /// The key that authenticates access rows, derived from the same seed (ADR 0013).
    row_key: std::sync::Arc<crate::integrity::RowMacKey>,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl AuditSigner {
    /// The signing key of a 32-byte seed (the stored key is a wrapped seed).
    pub fn from_seed(seed: &SecretKey) -> Result<Self, CoreError> {
        use aws_lc_rs::signature::KeyPair;
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed.expose())
            .map_err(|_| CoreError::Internal("invalid audit signing key".into()))?;
        let public = pair.public_key().as_ref().to_vec();
        let key_id = key_id(&public);
        let row_key = crate::integrity::RowMacKey::derive(seed)
            .ok_or_else(|| CoreError::Internal("cannot derive the row MAC key".into()))?;
        Ok(Self {
            pair,
            public,
            key_id,
            row_key: std::sync::Arc::new(row_key),
        })
    }

    /// Loads the stored signing key: `None` when none is stored yet; `Integrity` when the
    /// stored seed does not unwrap under `keyring` or does not give the stored public key.
    pub async fn load(store: &dyn Store, keyring: &Keyring) -> Result<Option<Self>, CoreError> {
        let Some(rec) = store.audit_signing_key().await? else {
            return Ok(None);
        };
        Self::from_record(&rec, keyring).map(Some)
    }

    /// The signing key a stored record holds: `Integrity` when the seed does not unwrap under
    /// `keyring` or does not give the record's public key (a record someone added or changed
    /// without the keyring).
    pub fn from_record(rec: &AuditKeyRecord, keyring: &Keyring) -> Result<Self, CoreError> {
        let seed = keyring
            .unwrap_dek(
                rec.kek_version,
                &signing_key_aad(&rec.public_key),
                &rec.wrapped,
            )
            .map_err(|_| CoreError::Integrity("the audit signing key does not unwrap".into()))?;
        let signer = Self::from_seed(&seed)?;
        if signer.public != rec.public_key {
            return Err(CoreError::Integrity(
                "the audit signing key does not match its public key".into(),
            ));
        }
        Ok(signer)
    }

    /// Loads the stored signing key, or makes and stores one (first start).
    pub async fn load_or_create(
        store: &dyn Store,
        keyring: &Keyring,
        now: Timestamp,
    ) -> Result<Self, CoreError> {
        for _ in 0..2 {
            if let Some(signer) = Self::load(store, keyring).await? {
                return Ok(signer);
            }
            let seed = SecretKey::generate()?;
            let signer = Self::from_seed(&seed)?;
            let (kek_version, wrapped) =
                keyring.wrap_dek(&signing_key_aad(&signer.public), &seed)?;
            match store
                .apply(Mutation::InsertAuditKey(AuditKeyRecord {
                    key_id: signer.key_id.clone(),
                    public_key: signer.public.clone(),
                    kek_version,
                    wrapped,
                    created_at: now,
                }))
                .await
            {
                Ok(_) => return Ok(signer),
                // Another node made one first: use it.
                Err(StoreError::AlreadyExists) => continue,
                Err(e) => return Err(CoreError::from_store(e, "audit signing key")),
            }
        }
        Err(CoreError::Internal(
            "cannot create the audit signing key".into(),
        ))
    }

    /// The key that authenticates access rows (ADR 0013).
    pub fn row_key(&self) -> std::sync::Arc<crate::integrity::RowMacKey> {
        self.row_key.clone()
    }

    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key as a PEM SubjectPublicKeyInfo (RFC 8410).
    pub fn public_key_pem(&self) -> String {
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(&self.public);
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    }

    /// Signs a backup: the SHA-256 `digest` of everything the backup holds before its
    /// signature (see [`backup_signature_message`]).
    pub fn sign_backup(&self, digest: &[u8; 32]) -> Vec<u8> {
        self.pair
            .sign(&backup_signature_message(digest))
            .as_ref()
            .to_vec()
    }

    /// Signs a head of the chain.
    pub fn sign(&self, seq: u64, hash: &str, now: Timestamp) -> AuditCheckpoint {
        let signed_at = now.unix_millis();
        let sig = self
            .pair
            .sign(&checkpoint_message(seq, hash, signed_at, &self.key_id));
        AuditCheckpoint {
            seq,
            hash: hash.to_owned(),
            signed_at,
            key_id: self.key_id.clone(),
            signature: hex::encode(sig.as_ref()),
        }
    }
}

/// What a backup's signature signs: a domain separator (so no checkpoint or other signature
/// of the audit key can pass for a backup's, nor the reverse) and the digest.
pub fn backup_signature_message(digest: &[u8; 32]) -> Vec<u8> {
    let mut m = b"keysafe-backup-v2\n".to_vec();
    m.extend_from_slice(digest);
    m
}

/// Whether `signature` is the audit key `public_key`'s signature of a backup with `digest`.
pub fn verify_backup_signature(public_key: &[u8], digest: &[u8; 32], signature: &[u8]) -> bool {
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, public_key)
        .verify(&backup_signature_message(digest), signature)
        .is_ok()
}

/// Most entries one page returns.
pub const MAX_PAGE: u32 = 10_000;

impl crate::Service {
    /// A page of the audit chain, for administrators.
    pub async fn audit_entries(
        &self,
        caller: &crate::Caller,
        from: u64,
        since: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<keysafe_proto::audit::AuditEntry>, CoreError> {
        caller.require_admin()?;
        Ok(self
            .store()
            .audit_entries(from.max(1), since, limit.clamp(1, MAX_PAGE))
            .await?)
    }

    /// Every checkpoint at or after `from`, for administrators.
    pub async fn audit_checkpoints(
        &self,
        caller: &crate::Caller,
        from: u64,
    ) -> Result<Vec<AuditCheckpoint>, CoreError> {
        caller.require_admin()?;
        Ok(self.store().audit_checkpoints(from).await?)
    }

    /// Retention (administrators): deletes the entries up to the signed checkpoint at
    /// `through`, which must be one this server's audit key signed and whose entry is still
    /// the one it signed (a rewritten chain is evidence, never pruned). The request's own
    /// entry, committed with the deletion, records it with the archive's SHA-256; a checkpoint
    /// signed right after covers that record, so `audit verify` can tell this prune from a
    /// deletion. Answers how many entries were deleted.
    pub async fn audit_prune(
        &self,
        caller: &crate::Caller,
        through: u64,
        archive_sha256: &str,
    ) -> Result<u64, CoreError> {
        caller.require_admin()?;
        if archive_sha256.len() != 64
            || !archive_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(CoreError::InvalidInput(
                "archive_sha256: expected the archive's SHA-256 as 64 lower-case hex digits".into(),
            ));
        }
        let signer = self.audit_signer().await?;
        let checkpoint = self
            .store()
            .audit_checkpoints(through)
            .await?
            .into_iter()
            .next()
            .filter(|c| c.seq == through)
            .ok_or_else(|| {
                CoreError::InvalidInput(format!(
                    "no signed checkpoint at entry {through}: prune only through a checkpoint \
                     (GET /v1/admin/audit/checkpoints lists them)"
                ))
            })?;
        if checkpoint.key_id != signer.key_id()
            || !keysafe_proto::audit::verify_signature(&checkpoint, signer.public_key())
        {
            return Err(CoreError::Integrity(format!(
                "the checkpoint at entry {through} is not signed by this server's audit key"
            )));
        }
        let entry = self.store().audit_entries(through, None, 1).await?;
        match entry.first() {
            Some(e) if e.seq == through && e.hash == checkpoint.hash => {}
            Some(e) if e.seq == through => {
                return Err(CoreError::Integrity(format!(
                    "entry {through} is not the one its checkpoint signed: the trail was \
                     rewritten; keep it as evidence (run `keysafe admin audit verify`)"
                )));
            }
            _ => {
                return Err(CoreError::InvalidInput(format!(
                    "entry {through} is not in the trail (pruned already?)"
                )));
            }
        }
        crate::audit::note(|e| {
            e.target = keysafe_proto::audit::prune_target(through, archive_sha256)
        });
        let deleted = match self
            .apply_audited(Mutation::PruneAudit { through })
            .await
            .map_err(|e| CoreError::from_store(e, "audit checkpoint"))?
        {
            crate::store::Applied::Pruned(n) => n,
            _ => 0,
        };
        // Sign the head that now holds the prune record.
        if let Err(e) = self.audit_checkpoint().await {
            tracing::warn!(error = %e, "cannot sign a checkpoint after the audit prune; the next periodic one will");
        }
        Ok(deleted)
    }

    /// Signs the head now (administrators), returning the newest checkpoint.
    pub async fn audit_checkpoint_now(
        &self,
        caller: &crate::Caller,
    ) -> Result<Option<AuditCheckpoint>, CoreError> {
        caller.require_admin()?;
        self.audit_checkpoint().await?;
        let seq = self.store().audit_head().seq;
        Ok(self
            .store()
            .audit_checkpoints(seq)
            .await?
            .into_iter()
            .next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent {
            request_id: "r1".into(),
            operation: "GET /v1/deposits/{*path}".into(),
            ..AuditEvent::default()
        }
    }

    #[tokio::test]
    async fn the_server_takes_an_unrecorded_event_once_with_its_notes() {
        let scope = AuditScope::new(event());
        scope
            .clone()
            .run(async { note(|e| e.version = Some(3)) })
            .await;
        let taken = scope.take_unrecorded().unwrap();
        assert_eq!(taken.request_id, "r1");
        assert_eq!(taken.version, Some(3));
        // Taken: a second take finds an empty event, never the request's again.
        assert_eq!(scope.take_unrecorded().unwrap(), AuditEvent::default());
    }

    #[tokio::test]
    async fn an_event_a_write_carried_is_not_taken_again() {
        let scope = AuditScope::new(event());
        let carried = scope
            .clone()
            .run(async {
                let e = event_for_write();
                mark_recorded();
                e
            })
            .await
            .unwrap();
        assert_eq!(carried.outcome, "ok");
        assert!(scope.is_recorded());
        assert!(scope.take_unrecorded().is_none());
    }
}
