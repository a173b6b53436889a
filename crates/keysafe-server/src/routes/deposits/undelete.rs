//! `POST /v1/deposits/{name}:undelete`: restores a soft-deleted deposit.

use crate::error::ApiError;
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_proto::DepositName;
use keysafe_proto::api::DepositInfo;

pub async fn post(
    State(state): State<AppState>,
    Authed(caller): Authed,
    name: DepositName,
) -> Result<Json<DepositInfo>, ApiError> {
    Ok(Json(state.service.undelete_deposit(&caller, name).await?))
}
