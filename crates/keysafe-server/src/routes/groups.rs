//! Client routes for groups of the caller's organisation: `GET|POST /v1/groups`,
//! `GET /v1/groups/{name}`, `GET /v1/groups/{name}/keys`, `POST /v1/groups/{name}/admit`.

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use http::StatusCode;
use keysafe_proto::api::{GroupAdmitRequest, GroupCreateRequest, GroupInfo, GroupKeys, GroupList};
use keysafe_proto::{ErrorCode, GroupName};

fn group_name(name: &str) -> Result<GroupName, ApiError> {
    GroupName::parse(name).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.message()))
}

#[utoipa::path(
    get, path = "/v1/groups", tag = "groups",
    responses((status = 200, description = "Groups of the caller's organisation.", body = GroupList)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<Json<GroupList>, ApiError> {
    Ok(Json(state.service.list_groups(&caller, false, None).await?))
}

#[utoipa::path(
    post, path = "/v1/groups", tag = "groups", request_body = GroupCreateRequest,
    responses(
        (status = 201, description = "The group was created, the caller its only member.", body = GroupInfo),
        (status = 409, description = "The group exists already."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<GroupCreateRequest>,
) -> Result<(StatusCode, Json<GroupInfo>), ApiError> {
    let g = state.service.create_group(&caller, req, false).await?;
    tracing::info!(org = %g.org, group = %g.name, "group created by a member");
    Ok((StatusCode::CREATED, Json(g)))
}

#[utoipa::path(
    get, path = "/v1/groups/{name}", tag = "groups", params(("name" = String, Path, description = "The group name.")),
    responses(
        (status = 200, description = "The group.", body = GroupInfo),
        (status = 404, description = "No such group."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<GroupInfo>, ApiError> {
    Ok(Json(
        state.service.group(&caller, &group_name(&name)?).await?,
    ))
}

#[utoipa::path(
    get, path = "/v1/groups/{name}/keys", tag = "groups", params(("name" = String, Path, description = "The group name.")),
    responses(
        (status = 200, description = "The caller's wrapped keys of the group, one per epoch.", body = GroupKeys),
        (status = 404, description = "No such group, or the caller is not a member."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn keys(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<GroupKeys>, ApiError> {
    Ok(Json(
        state
            .service
            .group_keys(&caller, &group_name(&name)?)
            .await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/groups/{name}/admit", tag = "groups", params(("name" = String, Path, description = "The group name.")), request_body = GroupAdmitRequest,
    responses(
        (status = 200, description = "The member was handed the group's keys.", body = GroupInfo),
        (status = 404, description = "No such group or member."),
        (status = 409, description = "A different key for an epoch the member holds already, or a state that does not allow it."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn admit(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<GroupAdmitRequest>,
) -> Result<Json<GroupInfo>, ApiError> {
    let name = group_name(&name)?;
    let member = req.member.clone();
    let g = state.service.admit_member(&caller, &name, req).await?;
    tracing::info!(group = %name, member = %member, "group member admitted");
    Ok(Json(g))
}
