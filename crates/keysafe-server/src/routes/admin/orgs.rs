//! `GET|POST /v1/admin/orgs`, `PUT /v1/admin/orgs/{name}/auth`.

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::identity::Admin;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use http::StatusCode;
use keysafe_proto::api::{
    OrgCreateRequest, OrgCreated, OrgList, OrgSetAuthRequest, OrgSetAuthResponse,
};
use keysafe_proto::{ErrorCode, OrgName};

#[utoipa::path(
    get, path = "/v1/admin/orgs", tag = "admin",
    responses((status = 200, description = "Every organisation.", body = OrgList)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Json<OrgList>, ApiError> {
    Ok(Json(OrgList {
        orgs: state.service.list_orgs(&admin).await?,
    }))
}

#[utoipa::path(
    post, path = "/v1/admin/orgs", tag = "admin", request_body = OrgCreateRequest,
    responses(
        (status = 201, description = "Created, with its generated auth secret.", body = OrgCreated),
        (status = 409, description = "The organisation exists already."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(req): ApiJson<OrgCreateRequest>,
) -> Result<(StatusCode, Json<OrgCreated>), ApiError> {
    let created = state.service.create_org(&admin, req).await?;
    tracing::info!(org = %created.name, "organisation created");
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    put, path = "/v1/admin/orgs/{name}/auth", tag = "admin", params(("name" = String, Path, description = "The organisation name.")), request_body = OrgSetAuthRequest,
    responses(
        (status = 200, description = "The new authentication mode (and a generated secret).", body = OrgSetAuthResponse),
        (status = 404, description = "No such organisation."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn set_auth(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<OrgSetAuthRequest>,
) -> Result<Json<OrgSetAuthResponse>, ApiError> {
    let name =
        OrgName::parse(&name).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.message()))?;
    let r = state.service.set_org_auth(&admin, &name, req).await?;
    tracing::info!(org = %r.name, mode = r.auth_mode.as_str(), "organisation auth changed");
    Ok(Json(r))
}

/// `POST /v1/admin/orgs/{name}/tokens`: a one-time registration token, shown once.
#[utoipa::path(
    post, path = "/v1/admin/orgs/{name}/tokens", tag = "admin", params(("name" = String, Path, description = "The organisation name.")), request_body = keysafe_proto::api::RegistrationTokenRequest,
    responses(
        (status = 201, description = "A one-time registration token.", body = keysafe_proto::api::RegistrationToken),
        (status = 404, description = "No such organisation."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn mint_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<keysafe_proto::api::RegistrationTokenRequest>,
) -> Result<(StatusCode, Json<keysafe_proto::api::RegistrationToken>), ApiError> {
    let org =
        OrgName::parse(&name).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.message()))?;
    let token = state
        .service
        .mint_registration_token(
            &admin,
            &org,
            req.ttl_seconds.map(std::time::Duration::from_secs),
        )
        .await?;
    tracing::info!(org = %org, expires_at = %token.expires_at.to_rfc3339(), "registration token minted");
    Ok((StatusCode::CREATED, Json(token)))
}
