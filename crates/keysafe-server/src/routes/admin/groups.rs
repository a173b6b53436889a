//! `GET|POST /v1/admin/groups`, `GET /v1/admin/groups/{org}/{name}`,
//! `POST /v1/admin/groups/{org}/{name}/add-member`, `.../remove-member`.

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::identity::Admin;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use http::StatusCode;
use keysafe_proto::api::{
    GroupAddMember, GroupCreateRequest, GroupInfo, GroupList, GroupRemoveMember,
};
use keysafe_proto::{ErrorCode, GroupName, OrgName};
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Only this organisation's groups.
    org: Option<String>,
}

fn names(org: &str, name: &str) -> Result<(OrgName, GroupName), ApiError> {
    let bad = |e: keysafe_proto::NameError| ApiError::new(ErrorCode::InvalidName, e.message());
    Ok((
        OrgName::parse(org).map_err(bad)?,
        GroupName::parse(name).map_err(bad)?,
    ))
}

#[utoipa::path(
    get, path = "/v1/admin/groups", tag = "admin", params(Filter),
    responses((status = 200, description = "Groups of every organisation, or of one.", body = GroupList)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiQuery(f): ApiQuery<Filter>,
) -> Result<Json<GroupList>, ApiError> {
    let org = f
        .org
        .as_deref()
        .map(OrgName::parse)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::InvalidName, e.message()))?;
    Ok(Json(
        state
            .service
            .list_groups(&admin, true, org.as_ref())
            .await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/admin/groups", tag = "admin", request_body = GroupCreateRequest,
    responses(
        (status = 201, description = "The group was created.", body = GroupInfo),
        (status = 404, description = "No such organisation or member."),
        (status = 409, description = "The group exists already."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(req): ApiJson<GroupCreateRequest>,
) -> Result<(StatusCode, Json<GroupInfo>), ApiError> {
    let g = state.service.create_group(&admin, req, true).await?;
    tracing::info!(org = %g.org, group = %g.name, "group created");
    Ok((StatusCode::CREATED, Json(g)))
}

#[utoipa::path(
    get, path = "/v1/admin/groups/{org}/{name}", tag = "admin", params(("org" = String, Path, description = "The organisation name."), ("name" = String, Path, description = "The group name.")),
    responses(
        (status = 200, description = "The group.", body = GroupInfo),
        (status = 404, description = "No such group."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> Result<Json<GroupInfo>, ApiError> {
    let (org, name) = names(&org, &name)?;
    Ok(Json(
        state.service.group_for_admin(&admin, &org, &name).await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/admin/groups/{org}/{name}/add-member", tag = "admin", params(("org" = String, Path, description = "The organisation name."), ("name" = String, Path, description = "The group name.")), request_body = GroupAddMember,
    responses(
        (status = 200, description = "The member was added (a key holder admits it).", body = GroupInfo),
        (status = 404, description = "No such group or client."),
        (status = 409, description = "The client is a member already."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn add_member(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath((org, name)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<GroupAddMember>,
) -> Result<Json<GroupInfo>, ApiError> {
    let (org, name) = names(&org, &name)?;
    let g = state
        .service
        .add_group_member(&admin, &org, &name, &req.member)
        .await?;
    tracing::info!(org = %org, group = %name, member = %req.member, "group member added");
    Ok(Json(g))
}

#[utoipa::path(
    post, path = "/v1/admin/groups/{org}/{name}/remove-member", tag = "admin", params(("org" = String, Path, description = "The organisation name."), ("name" = String, Path, description = "The group name.")), request_body = GroupRemoveMember,
    responses(
        (status = 200, description = "The member was removed and the group moved to a new epoch.", body = GroupInfo),
        (status = 404, description = "No such group or member."),
        (status = 409, description = "A stale epoch, or the group's last member."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn remove_member(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath((org, name)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<GroupRemoveMember>,
) -> Result<Json<GroupInfo>, ApiError> {
    let (org, name) = names(&org, &name)?;
    let member = req.member.clone();
    let g = state
        .service
        .remove_group_member(&admin, &org, &name, req)
        .await?;
    tracing::info!(org = %org, group = %name, member = %member, epoch = g.epoch, "group member removed");
    Ok(Json(g))
}
