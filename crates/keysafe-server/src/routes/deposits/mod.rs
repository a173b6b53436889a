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
use keysafe_proto::api::AclUpdate;
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

fn unknown_op(op: &str) -> ApiError {
    let shown: String = op.chars().take(32).collect();
    ApiError::new(
        ErrorCode::NoRoute,
        format!("unknown deposit operation {shown:?}; see docs/api.md"),
    )
}

pub async fn dispatch_get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(path): ApiPath<String>,
    ApiQuery(params): ApiQuery<DepositParams>,
    headers: http::HeaderMap,
) -> Result<Response, ApiError> {
    let (name, op) = parse_path(&path)?;
    let owner = params.owner.as_deref();
    match op {
        None => {
            let known = get::if_none_match(&headers)?;
            get::get(&state, &caller, owner, name, params.version()?, &known).await
        }
        Some("versions") => {
            params.no_version()?;
            Ok(Json(state.service.list_versions(&caller, owner, name).await?).into_response())
        }
        Some("acl") => {
            params.no_version()?;
            Ok(Json(state.service.get_acl(&caller, owner, name).await?).into_response())
        }
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
    params.no_version()?;
    let owner = params.owner.as_deref();
    match op {
        Some("undelete") => {
            Ok(Json(state.service.undelete_deposit(&caller, owner, name).await?).into_response())
        }
        Some("purge") => {
            let purged = state.service.purge_deposit(&caller, owner, name).await?;
            tracing::info!(name = %purged.name, versions = purged.purged_versions, "deposit purged");
            Ok(Json(purged).into_response())
        }
        Some("share") => {
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
                .update_acl(&caller, owner, name, update)
                .await?;
            tracing::info!(name = %acl.name, serial = acl.acl_serial, "deposit ACL changed");
            Ok(Json(acl).into_response())
        }
        Some(other) => Err(unknown_op(other)),
        None => Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "POST needs an operation: {name}:undelete, {name}:purge or {name}:share",
        )),
    }
}

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
