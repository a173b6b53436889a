//! `POST /v1/admin/unseal`, `GET /v1/admin/keyring`, `POST /v1/admin/keyring/rotate`,
//! `POST /v1/admin/keyring/retire`, `POST /v1/admin/backup`, `POST /v1/admin/integrity/verify`.
//! Administrators only.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::identity::Admin;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use keysafe_core::service::sealing::KeyringStatus;
use keysafe_proto::ErrorCode;
use keysafe_proto::api::{
    BackupRequest, IntegrityReport, KekUsageInfo, KekVersionInfo, KeyringRetireRequest,
    KeyringRotated, KeyringStatusInfo, UnsealRequest,
};

#[utoipa::path(
    post, path = "/v1/admin/unseal", tag = "keyring", request_body = UnsealRequest,
    responses(
        (status = 200, description = "Unsealed; the keyring's state.", body = KeyringStatusInfo),
        (status = 403, description = "A wrong passphrase."),
        (status = 409, description = "Not sealed, or not a passphrase seal."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn unseal(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(req): ApiJson<UnsealRequest>,
) -> Result<Json<KeyringStatusInfo>, ApiError> {
    let pass = zeroize::Zeroizing::new(req.passphrase.as_bytes().to_vec());
    state.service.unseal_with_passphrase(&admin, pass).await?;
    Ok(Json(info(state.service.keyring_status(&admin).await?)))
}

#[utoipa::path(
    get, path = "/v1/admin/keyring", tag = "keyring",
    responses((status = 200, description = "The keyring's state.", body = KeyringStatusInfo)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn status(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Json<KeyringStatusInfo>, ApiError> {
    Ok(Json(info(state.service.keyring_status(&admin).await?)))
}

/// Checks every authenticated access row (ADR 0013) and lists each one that fails.
#[utoipa::path(
    post, path = "/v1/admin/integrity/verify", tag = "keyring",
    responses((status = 200, description = "Every authenticated access row checked; the ones that fail, by kind and key.", body = IntegrityReport)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn integrity_verify(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Json<IntegrityReport>, ApiError> {
    Ok(Json(state.service.verify_integrity_as(&admin).await?))
}

#[utoipa::path(
    post, path = "/v1/admin/keyring/rotate", tag = "keyring",
    responses((status = 200, description = "A new keyring version is current.", body = KeyringRotated)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn rotate(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Json<KeyringRotated>, ApiError> {
    let version = state.service.rotate_keyring(&admin).await?;
    Ok(Json(KeyringRotated { version }))
}

#[utoipa::path(
    post, path = "/v1/admin/keyring/retire", tag = "keyring", request_body = KeyringRetireRequest,
    responses(
        (status = 200, description = "The version was retired.", body = KeyringStatusInfo),
        (status = 404, description = "No such keyring version."),
        (status = 409, description = "The version is current or still in use."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn retire(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(req): ApiJson<KeyringRetireRequest>,
) -> Result<Json<KeyringStatusInfo>, ApiError> {
    state.service.retire_kek(&admin, req.version).await?;
    Ok(Json(info(state.service.keyring_status(&admin).await?)))
}

/// Streams a backup of the store (signed by the audit key) to the caller. Key-bearing files
/// only to the recipients pinned in `[backup] key_recipients` (see `crate::backup`).
#[utoipa::path(
    post, path = "/v1/admin/backup", tag = "keyring", request_body = BackupRequest,
    responses(
        (status = 200, description = "The age-encrypted backup file, streamed.", content_type = "application/octet-stream", body = String),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn backup(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(req): ApiJson<BackupRequest>,
) -> Result<Response, ApiError> {
    let recipients = crate::backup::parse_recipients(&req.recipients)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e))?;
    let includes = crate::backup::Includes {
        root_key: req.include_root_key,
        tls_key: req.include_tls_key,
        admin_identity: req.include_admin_identity,
    };
    crate::backup::check_online(&includes, &recipients, &state.backup.key_recipients)?;
    let source = state.service.backup_source(&admin).await?;
    let plan = crate::backup::plan(
        &state.backup,
        &state.fingerprint(),
        includes,
        crate::backup::Origin::Api,
        source.signer.key_id(),
    )?;
    tracing::info!(
        admin = %admin.fingerprint,
        root_key = includes.root_key,
        tls_key = includes.tls_key,
        admin_identity = includes.admin_identity,
        "backup started"
    );
    let body = axum::body::Body::from_stream(crate::backup::stream(plan, source, recipients));
    Ok((
        [(http::header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response())
}

fn info(s: KeyringStatus) -> KeyringStatusInfo {
    KeyringStatusInfo {
        sealed: s.sealed,
        sealed_reason: s.sealed_reason,
        seal: s.seal,
        per_deposit: s.per_deposit,
        current: s.current,
        versions: s
            .versions
            .into_iter()
            .map(|v| KekVersionInfo {
                version: v.version,
                created_at: v.created_at,
                current: v.current,
                // Deposit data keys only; `usage` also lists the audit signing key.
                data_keys: v
                    .usage
                    .iter()
                    .filter(|(k, _)| *k == keysafe_core::store::WrappedKind::DepositVersion)
                    .map(|(_, n)| n)
                    .sum(),
                usage: v
                    .usage
                    .into_iter()
                    .map(|(k, n)| KekUsageInfo {
                        kind: k.as_str().to_owned(),
                        count: n,
                    })
                    .collect(),
            })
            .collect(),
        rewrap_pending: s.rewrap_pending,
    }
}
