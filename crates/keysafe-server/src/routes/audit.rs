//! The audit trail over HTTP: `GET /v1/audit/public-key` (anyone: the key that signs
//! checkpoints), and for administrators `GET /v1/admin/audit/entries`,
//! `GET /v1/admin/audit/checkpoints`, `POST /v1/admin/audit/checkpoint`, and retention's
//! `POST /v1/admin/audit/prune`. Verification happens in
//! the client (`keysafe admin audit verify`), so the server is never the judge of its own log.

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::identity::Admin;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_proto::Timestamp;
use keysafe_proto::audit::{
    AuditCheckpoint, AuditCheckpoints, AuditPage, AuditPruneRequest, AuditPruneResponse,
    AuditPublicKey, CHECKPOINT_ALGORITHM,
};
use serde::Deserialize;

#[utoipa::path(
    get, path = "/v1/audit/public-key", tag = "audit",
    responses((status = 200, description = "The key that signs audit checkpoints.", body = AuditPublicKey)),
)]
pub async fn public_key(State(state): State<AppState>) -> Result<Json<AuditPublicKey>, ApiError> {
    let signer = state.service.audit_signer().await?;
    Ok(Json(AuditPublicKey {
        algorithm: CHECKPOINT_ALGORITHM.to_owned(),
        public_key: hex::encode(signer.public_key()),
        key_id: signer.key_id().to_owned(),
        pem: signer.public_key_pem(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    from: Option<u64>,
    /// RFC 3339.
    since: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/v1/admin/audit/entries", tag = "audit", params(EntriesQuery),
    responses((status = 200, description = "Audit entries in chain order.", body = AuditPage)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckpointsQuery {
    /// Checkpoints with `seq` at or after this (default 0).
    from: Option<u64>,
}

#[utoipa::path(
    get, path = "/v1/admin/audit/checkpoints", tag = "audit", params(CheckpointsQuery),
    responses((status = 200, description = "Signed checkpoints, in order.", body = AuditCheckpoints)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
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

#[utoipa::path(
    post, path = "/v1/admin/audit/checkpoint", tag = "audit",
    responses((status = 200, description = "The newest checkpoint, or null while the chain is empty.", body = Option<AuditCheckpoint>)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn checkpoint(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Json<Option<AuditCheckpoint>>, ApiError> {
    Ok(Json(state.service.audit_checkpoint_now(&admin).await?))
}

#[utoipa::path(
    post, path = "/v1/admin/audit/prune", tag = "audit", request_body = AuditPruneRequest,
    responses(
        (status = 200, description = "The entries up to the checkpoint were deleted and the prune recorded.", body = AuditPruneResponse),
        (status = 409, description = "The checkpoint is at the newest entry: the head is never pruned."),
        (status = 500, description = "The checkpoint is not this server's signature, or its entry was rewritten (integrity_error)."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn prune(
    State(state): State<AppState>,
    Admin(admin): Admin,
    crate::extract::ApiJson(req): crate::extract::ApiJson<AuditPruneRequest>,
) -> Result<Json<AuditPruneResponse>, ApiError> {
    let deleted = state
        .service
        .audit_prune(&admin, req.through, &req.archive_sha256)
        .await?;
    Ok(Json(AuditPruneResponse {
        through: req.through,
        deleted,
    }))
}
