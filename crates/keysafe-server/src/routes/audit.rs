//! The audit trail over HTTP: `GET /v1/audit/public-key` (anyone: the key that signs
//! checkpoints), and for administrators `GET /v1/admin/audit/entries`,
//! `GET /v1/admin/audit/checkpoints`, `POST /v1/admin/audit/checkpoint`. Verification happens in
//! the client (`keysafe admin audit verify`), so the server is never the judge of its own log.

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::identity::Admin;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_proto::Timestamp;
use keysafe_proto::audit::{
    AuditCheckpoint, AuditCheckpoints, AuditPage, AuditPublicKey, CHECKPOINT_ALGORITHM,
};
use serde::Deserialize;

pub async fn public_key(State(state): State<AppState>) -> Result<Json<AuditPublicKey>, ApiError> {
    let signer = state.service.audit_signer().await?;
    Ok(Json(AuditPublicKey {
        algorithm: CHECKPOINT_ALGORITHM.to_owned(),
        public_key: hex::encode(signer.public_key()),
        key_id: signer.key_id().to_owned(),
        pem: signer.public_key_pem(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct EntriesQuery {
    from: Option<u64>,
    /// RFC 3339.
    since: Option<String>,
    limit: Option<u32>,
}

pub async fn entries(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiQuery(q): ApiQuery<EntriesQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let since = q
        .since
        .as_deref()
        .map(Timestamp::parse_rfc3339)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("since: not an RFC 3339 time: {e}")))?;
    let entries = state
        .service
        .audit_entries(&admin, q.from.unwrap_or(1), since, q.limit.unwrap_or(1000))
        .await?;
    Ok(Json(AuditPage { entries }))
}

#[derive(Debug, Deserialize)]
pub struct CheckpointsQuery {
    from: Option<u64>,
}

pub async fn checkpoints(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiQuery(q): ApiQuery<CheckpointsQuery>,
) -> Result<Json<AuditCheckpoints>, ApiError> {
    let checkpoints = state
        .service
        .audit_checkpoints(&admin, q.from.unwrap_or(0))
        .await?;
    Ok(Json(AuditCheckpoints { checkpoints }))
}

pub async fn checkpoint(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Json<Option<AuditCheckpoint>>, ApiError> {
    Ok(Json(state.service.audit_checkpoint_now(&admin).await?))
}
