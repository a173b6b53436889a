//! `GET /v1/whoami`: the caller's own client record.

use crate::error::ApiError;
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_proto::api::ClientInfo;

pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<Json<ClientInfo>, ApiError> {
    Ok(Json(state.service.whoami(&caller).await?))
}
