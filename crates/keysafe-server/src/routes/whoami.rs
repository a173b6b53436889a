//! `GET /v1/whoami`: the caller's own client record.

use crate::error::ApiError;
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_proto::api::ClientInfo;

#[utoipa::path(
    get, path = "/v1/whoami", tag = "clients",
    responses((status = 200, description = "The caller's own record.", body = ClientInfo)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<Json<ClientInfo>, ApiError> {
    Ok(Json(state.service.whoami(&caller).await?))
}
