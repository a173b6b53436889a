//! Deposit routes. A deposit name may contain '/', so the name is the rest of the path; an
//! operation other than the plain verbs is a suffix after ':' (which names cannot contain):
//! `GET {name}:versions`, `POST {name}:undelete`, `POST {name}:purge`.

pub mod delete;
pub mod get;
pub mod list;
pub mod purge;
pub mod put;
pub mod undelete;
pub mod versions;

use crate::error::ApiError;
use crate::identity::Authed;
use crate::state::AppState;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use keysafe_proto::{DepositName, ErrorCode};

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
    state: State<AppState>,
    caller: Authed,
    Path(path): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (name, op) = parse_path(&path)?;
    match op {
        None => get::get(state, caller, name, req).await,
        Some("versions") => Ok(versions::get(state, caller, name).await?.into_response()),
        Some(other) => Err(unknown_op(other)),
    }
}

pub async fn dispatch_post(
    state: State<AppState>,
    caller: Authed,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let (name, op) = parse_path(&path)?;
    match op {
        Some("undelete") => Ok(undelete::post(state, caller, name).await?.into_response()),
        Some("purge") => Ok(purge::post(state, caller, name).await?.into_response()),
        Some(other) => Err(unknown_op(other)),
        None => Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "POST needs an operation: {name}:undelete or {name}:purge",
        )),
    }
}
