//! Deposit routes. A deposit name may contain '/', so the name is the rest of the path; an
//! operation other than the plain verbs is a suffix after ':' (which names cannot contain):
//! `GET {name}:versions`, `GET {name}:acl`, `POST {name}:undelete`, `POST {name}:purge`,
//! `POST {name}:share`. Every route takes `?owner=FP|group:NAME` to reach a deposit another
//! principal owns (default: the caller's own).

pub mod get;
pub mod list;
pub mod put;

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use keysafe_core::Caller;
use keysafe_proto::api::{Acl, AclUpdate, DepositInfo, PurgeResponse, VersionList};
use keysafe_proto::{DepositName, DepositVersion, ErrorCode};
use serde::Deserialize;

/// The query parameters deposit routes accept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositParams {
    /// A fingerprint or `group:NAME`; absent: the caller.
    pub owner: Option<String>,
    /// GET only: a version other than the current one.
    pub version: Option<String>,
}

impl DepositParams {
    fn version(&self) -> Result<Option<DepositVersion>, ApiError> {
        self.version
            .as_deref()
            .map(DepositVersion::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.message().to_owned()))
    }

    fn no_version(&self) -> Result<(), ApiError> {
        if self.version.is_some() {
            return Err(ApiError::bad_request("only GET takes ?version="));
        }
        Ok(())
    }
}

/// Splits `name[:op]` and validates the name.
pub(crate) fn parse_path(path: &str) -> Result<(DepositName, Option<&str>), ApiError> {
    let (name, op) = match path.rsplit_once(':') {
        Some((n, op)) => (n, Some(op)),
        None => (path, None),
    };
    let name =
        DepositName::parse(name).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.message()))?;
    Ok((name, op))
}

/// Refuses an operation suffix [`OPERATIONS`] does not list for `method`.
fn listed(method: &str, op: Option<&str>) -> Result<(), ApiError> {
    match op {
        Some(o) if !OPERATIONS.contains(&(method, op)) => Err(unknown_op(o)),
        _ => Ok(()),
    }
}

fn unknown_op(op: &str) -> ApiError {
    let shown: String = op.chars().take(32).collect();
    ApiError::new(
        ErrorCode::NoRoute,
        format!("unknown deposit operation {shown:?}; see docs/api.md"),
    )
}

/// The operations the dispatchers below serve, as (method, `:operation` suffix). A suffix not
/// listed here is answered `404 no_route` whatever the matches say, and a unit test checks that
/// the OpenAPI document lists exactly these under `/v1/deposits/`: an operation cannot be
/// served without being documented.
pub(crate) const OPERATIONS: &[(&str, Option<&str>)] = &[
    ("GET", None),
    ("PUT", None),
    ("DELETE", None),
    ("GET", Some("versions")),
    ("GET", Some("acl")),
    ("POST", Some("undelete")),
    ("POST", Some("purge")),
    ("POST", Some("share")),
];

pub async fn dispatch_get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(path): ApiPath<String>,
    ApiQuery(params): ApiQuery<DepositParams>,
    headers: http::HeaderMap,
) -> Result<Response, ApiError> {
    let (name, op) = parse_path(&path)?;
    listed("GET", op)?;
    match op {
        None => get::get(&state, &caller, &params, name, &headers).await,
        Some("versions") => versions(&state, &caller, &params, name).await,
        Some("acl") => acl(&state, &caller, &params, name).await,
        Some(other) => Err(unknown_op(other)),
    }
}

pub async fn dispatch_post(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(path): ApiPath<String>,
    ApiQuery(params): ApiQuery<DepositParams>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let (name, op) = parse_path(&path)?;
    listed("POST", op)?;
    match op {
        Some("undelete") => undelete(&state, &caller, &params, name).await,
        Some("purge") => purge(&state, &caller, &params, name).await,
        Some("share") => share(&state, &caller, &params, name, body).await,
        Some(other) => Err(unknown_op(other)),
        None => Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "POST needs an operation: {name}:undelete, {name}:purge or {name}:share",
        )),
    }
}

/// Lists the versions of a deposit.
#[utoipa::path(
    get, path = "/v1/deposits/{name}:versions", tag = "deposits", params(NameParam, OwnerParam),
    responses(
        (status = 200, description = "The deposit's versions, newest first.", body = VersionList),
        (status = 404, description = "No such deposit visible to the caller."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub(crate) async fn versions(
    state: &AppState,
    caller: &Caller,
    params: &DepositParams,
    name: DepositName,
) -> Result<Response, ApiError> {
    params.no_version()?;
    let owner = params.owner.as_deref();
    Ok(Json(state.service.list_versions(caller, owner, name).await?).into_response())
}

/// Reads a deposit's access list.
#[utoipa::path(
    get, path = "/v1/deposits/{name}:acl", tag = "deposits", params(NameParam, OwnerParam),
    responses(
        (status = 200, description = "The deposit's ACL with each grantee's recipient.", body = Acl),
        (status = 404, description = "No such deposit visible to the caller."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub(crate) async fn acl(
    state: &AppState,
    caller: &Caller,
    params: &DepositParams,
    name: DepositName,
) -> Result<Response, ApiError> {
    params.no_version()?;
    let owner = params.owner.as_deref();
    Ok(Json(state.service.get_acl(caller, owner, name).await?).into_response())
}

/// Restores a soft-deleted deposit.
#[utoipa::path(
    post, path = "/v1/deposits/{name}:undelete", tag = "deposits", params(NameParam, OwnerParam),
    responses(
        (status = 200, description = "The deposit is live again.", body = DepositInfo),
        (status = 403, description = "A grantee may not undelete."),
        (status = 404, description = "No such deposit visible to the caller."),
        (status = 409, description = "The deposit is not deleted."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub(crate) async fn undelete(
    state: &AppState,
    caller: &Caller,
    params: &DepositParams,
    name: DepositName,
) -> Result<Response, ApiError> {
    params.no_version()?;
    let owner = params.owner.as_deref();
    Ok(Json(state.service.undelete_deposit(caller, owner, name).await?).into_response())
}

/// Destroys a deposit (deleted or not), every version of it and its ACL; irreversible.
#[utoipa::path(
    post, path = "/v1/deposits/{name}:purge", tag = "deposits", params(NameParam, OwnerParam),
    responses(
        (status = 200, description = "The deposit is gone for good.", body = PurgeResponse),
        (status = 403, description = "A grantee may not purge."),
        (status = 404, description = "No such deposit visible to the caller."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub(crate) async fn purge(
    state: &AppState,
    caller: &Caller,
    params: &DepositParams,
    name: DepositName,
) -> Result<Response, ApiError> {
    params.no_version()?;
    let owner = params.owner.as_deref();
    let purged = state.service.purge_deposit(caller, owner, name).await?;
    tracing::info!(name = %purged.name, versions = purged.purged_versions, "deposit purged");
    Ok(Json(purged).into_response())
}

/// Changes a deposit's access list, with every age version re-encrypted for the new one.
#[utoipa::path(
    post, path = "/v1/deposits/{name}:share", tag = "deposits", params(NameParam, OwnerParam),
    request_body = AclUpdate,
    responses(
        (status = 200, description = "The new ACL.", body = Acl),
        (status = 403, description = "Only the owner changes an ACL."),
        (status = 404, description = "No such deposit or grantee visible to the caller."),
        (status = 409, description = "A stale expected version or ACL serial, or a soft-deleted deposit."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub(crate) async fn share(
    state: &AppState,
    caller: &Caller,
    params: &DepositParams,
    name: DepositName,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    params.no_version()?;
    let owner = params.owner.as_deref();
    // Every age version comes back re-encrypted: allow that much (base64) plus slack.
    let limit = state
        .service
        .limits()
        .max_deposit_size
        .saturating_mul(64)
        .min(256 * 1024 * 1024);
    let bytes = put::read_limited(body, &http::HeaderMap::new(), limit).await?;
    let update: AclUpdate = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid ACL update: {e}")))?;
    let acl = state
        .service
        .update_acl(caller, owner, name, update)
        .await?;
    tracing::info!(name = %acl.name, serial = acl.acl_serial, "deposit ACL changed");
    Ok(Json(acl).into_response())
}

/// Soft-deletes a deposit (undelete or purge it later).
#[utoipa::path(
    delete, path = "/v1/deposits/{name}", tag = "deposits", params(NameParam, OwnerParam),
    responses(
        (status = 200, description = "The deposit is soft-deleted.", body = DepositInfo),
        (status = 403, description = "A grantee may not delete."),
        (status = 404, description = "No such deposit visible to the caller."),
        (status = 409, description = "The deposit is deleted already."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(path): ApiPath<String>,
    ApiQuery(params): ApiQuery<DepositParams>,
) -> Result<Response, ApiError> {
    let (name, op) = parse_path(&path)?;
    params.no_version()?;
    if op.is_some() {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "DELETE takes a plain deposit name; purge with POST {name}:purge",
        ));
    }
    Ok(Json(
        state
            .service
            .delete_deposit(&caller, params.owner.as_deref(), name)
            .await?,
    )
    .into_response())
}

/// The deposit name in a deposit path: it may contain '/', and it is followed by
/// `:operation` where the path says so.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct NameParam {
    /// A deposit name (1-256 characters of `A-Z a-z 0-9 . _ / -`; '/' separates segments and is
    /// sent as is).
    name: String,
}

/// The owner of the deposit, when it is not the caller.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct OwnerParam {
    /// A fingerprint or `group:NAME` of the caller's organisation; absent: the caller.
    owner: Option<String>,
}
