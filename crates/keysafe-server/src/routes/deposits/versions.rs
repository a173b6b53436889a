//! `GET /v1/deposits/{name}:versions`: every version with its metadata.

use crate::error::ApiError;
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_proto::DepositName;
use keysafe_proto::api::VersionList;

pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    name: DepositName,
) -> Result<Json<VersionList>, ApiError> {
    Ok(Json(state.service.list_versions(&caller, name).await?))
}
