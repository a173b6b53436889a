//! The end of life: `DELETE /v1/admin/orgs/{name}`, `DELETE /v1/admin/clients/{fingerprint}`,
//! `DELETE /v1/admin/groups/{org}/{name}` (each with `?dry_run=true` to only say what would go,
//! and `409 in_use` naming what still depends), and unused registration tokens:
//! `GET /v1/admin/orgs/{name}/tokens`, `DELETE /v1/admin/orgs/{name}/tokens` (all) and
//! `DELETE /v1/admin/orgs/{name}/tokens/{id}` (one, by a prefix of its hash).

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::identity::Admin;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_core::service::TokenSelector;
use keysafe_proto::api::{
    ClientDeletion, DeleteQuery, GroupDeletion, OrgDeletion, RegistrationTokenList, RevokedTokens,
};
use keysafe_proto::{ClientFingerprint, ErrorCode, GroupName, OrgName};

fn org_name(s: &str) -> Result<OrgName, ApiError> {
    OrgName::parse(s).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.message()))
}

#[utoipa::path(
    delete, path = "/v1/admin/orgs/{name}", tag = "admin", params(("name" = String, Path, description = "The organisation name."), DeleteQuery),
    responses(
        (status = 200, description = "Deleted (or, with dry_run, what would go).", body = OrgDeletion),
        (status = 404, description = "No such organisation."),
        (status = 409, description = "Clients or groups still depend on it."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn delete_org(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<OrgDeletion>, ApiError> {
    let name = org_name(&name)?;
    let d = state.service.delete_org(&admin, &name, q.dry_run).await?;
    if !d.dry_run {
        tracing::info!(org = %d.name, tokens = d.unused_tokens, by = %admin.fingerprint, "organisation deleted");
    }
    Ok(Json(d))
}

#[utoipa::path(
    delete, path = "/v1/admin/clients/{fingerprint}", tag = "admin",
    params(("fingerprint" = String, Path, description = "The client's fingerprint."), DeleteQuery),
    responses(
        (status = 200, description = "Deleted (or, with dry_run, what would go).", body = ClientDeletion),
        (status = 404, description = "No such client."),
        (status = 409, description = "Deposits or groups still depend on it, or it is the last active administrator."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn delete_client(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath(fp): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<ClientDeletion>, ApiError> {
    let fp = ClientFingerprint::parse(&fp).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let d = state.service.delete_client(&admin, &fp, q.dry_run).await?;
    if !d.dry_run {
        tracing::info!(
            client = %d.fingerprint,
            memberships = d.memberships.len(),
            grants = d.grants,
            by = %admin.fingerprint,
            "client deleted"
        );
    }
    Ok(Json(d))
}

#[utoipa::path(
    delete, path = "/v1/admin/groups/{org}/{name}", tag = "admin",
    params(("org" = String, Path, description = "The organisation name."), ("name" = String, Path, description = "The group name."), DeleteQuery),
    responses(
        (status = 200, description = "Deleted (or, with dry_run, what would go).", body = GroupDeletion),
        (status = 404, description = "No such group."),
        (status = 409, description = "Deposits still depend on it."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn delete_group(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath((org, name)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<GroupDeletion>, ApiError> {
    let org = org_name(&org)?;
    let name =
        GroupName::parse(&name).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.message()))?;
    let d = state
        .service
        .delete_group(&admin, &org, &name, q.dry_run)
        .await?;
    if !d.dry_run {
        tracing::info!(org = %d.org, group = %d.name, members = d.members, by = %admin.fingerprint, "group deleted");
    }
    Ok(Json(d))
}

#[utoipa::path(
    get, path = "/v1/admin/orgs/{name}/tokens", tag = "admin", params(("name" = String, Path, description = "The organisation name.")),
    responses(
        (status = 200, description = "The organisation's unused registration tokens (never their values).", body = RegistrationTokenList),
        (status = 404, description = "No such organisation."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<RegistrationTokenList>, ApiError> {
    let org = org_name(&name)?;
    Ok(Json(
        state.service.list_registration_tokens(&admin, &org).await?,
    ))
}

#[utoipa::path(
    delete, path = "/v1/admin/orgs/{name}/tokens", tag = "admin", params(("name" = String, Path, description = "The organisation name.")),
    responses(
        (status = 200, description = "Every unused registration token of the organisation was revoked.", body = RevokedTokens),
        (status = 404, description = "No such organisation."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn revoke_all_tokens(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<RevokedTokens>, ApiError> {
    let org = org_name(&name)?;
    let r = state
        .service
        .revoke_registration_tokens(&admin, &org, TokenSelector::All)
        .await?;
    tracing::info!(org = %r.org, revoked = r.revoked, "unused registration tokens revoked");
    Ok(Json(r))
}

#[utoipa::path(
    delete, path = "/v1/admin/orgs/{name}/tokens/{id}", tag = "admin",
    params(("name" = String, Path, description = "The organisation name."), ("id" = String, Path, description = "The token's id.")),
    responses(
        (status = 200, description = "The token was revoked.", body = RevokedTokens),
        (status = 404, description = "No such organisation or unused token."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<RevokedTokens>, ApiError> {
    let org = org_name(&name)?;
    let r = state
        .service
        .revoke_registration_tokens(&admin, &org, TokenSelector::Id(id))
        .await?;
    tracing::info!(org = %r.org, revoked = r.revoked, "registration token revoked");
    Ok(Json(r))
}
