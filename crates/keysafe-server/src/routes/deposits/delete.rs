//! `DELETE /v1/deposits/{name}`: soft delete; `POST {name}:undelete` restores it.

use super::parse_path;
use crate::error::ApiError;
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use keysafe_proto::ErrorCode;
use keysafe_proto::api::DepositInfo;

pub async fn delete(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(path): Path<String>,
) -> Result<Json<DepositInfo>, ApiError> {
    let (name, op) = parse_path(&path)?;
    if op.is_some() {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "DELETE takes a plain deposit name; purge with POST {name}:purge",
        ));
    }
    Ok(Json(state.service.delete_deposit(&caller, name).await?))
}
