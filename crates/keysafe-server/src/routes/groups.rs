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

pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<Json<GroupList>, ApiError> {
    Ok(Json(state.service.list_groups(&caller, false, None).await?))
}

pub async fn create(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<GroupCreateRequest>,
) -> Result<(StatusCode, Json<GroupInfo>), ApiError> {
    let g = state.service.create_group(&caller, req, false).await?;
    tracing::info!(org = %g.org, group = %g.name, "group created by a member");
    Ok((StatusCode::CREATED, Json(g)))
}

pub async fn show(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<GroupInfo>, ApiError> {
    Ok(Json(
        state.service.group(&caller, &group_name(&name)?).await?,
    ))
}

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
