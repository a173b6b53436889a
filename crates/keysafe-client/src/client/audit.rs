//! The audit trail: the key that signs checkpoints, entry pages, checkpoints, signing one now,
//! and pruning entries a signed checkpoint covers.

use super::{KeysafeClient, Req};
use crate::error::ClientError;

impl KeysafeClient {
    // ---- audit trail ----

    /// `GET /v1/audit/public-key`: the key that signs audit checkpoints.
    pub async fn audit_public_key(
        &self,
    ) -> Result<keysafe_proto::audit::AuditPublicKey, ClientError> {
        self.json(Req::get("/v1/audit/public-key")).await
    }

    /// A page of audit entries from `from` (and not older than `since`, RFC 3339).
    pub async fn audit_entries(
        &self,
        from: u64,
        since: Option<&str>,
        limit: u32,
    ) -> Result<keysafe_proto::audit::AuditPage, ClientError> {
        let from = from.to_string();
        let limit = limit.to_string();
        let mut q: Vec<(&str, &str)> = vec![("from", &from), ("limit", &limit)];
        if let Some(s) = since {
            q.push(("since", s));
        }
        self.json(Req::get("/v1/admin/audit/entries").query(&q)?)
            .await
    }

    /// Every audit checkpoint at or after `from`.
    pub async fn audit_checkpoints(
        &self,
        from: u64,
    ) -> Result<keysafe_proto::audit::AuditCheckpoints, ClientError> {
        self.json(Req::get("/v1/admin/audit/checkpoints").query(&[("from", from.to_string())])?)
            .await
    }

    /// Asks the server to sign the head of its audit chain now.
    pub async fn audit_checkpoint_now(
        &self,
    ) -> Result<Option<keysafe_proto::audit::AuditCheckpoint>, ClientError> {
        self.json(Req::post("/v1/admin/audit/checkpoint")).await
    }

    /// Deletes the audit entries up to the signed checkpoint at `through` (after archiving).
    pub async fn audit_prune(
        &self,
        req: &keysafe_proto::audit::AuditPruneRequest,
    ) -> Result<keysafe_proto::audit::AuditPruneResponse, ClientError> {
        self.json(Req::post("/v1/admin/audit/prune").json(req)?)
            .await
    }
}
