//! `POST /v1/deposits/{name}:purge`: destroys every version irrecoverably.

use crate::error::ApiError;
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_proto::DepositName;
use keysafe_proto::api::PurgeResponse;

pub async fn post(
    State(state): State<AppState>,
    Authed(caller): Authed,
    name: DepositName,
) -> Result<Json<PurgeResponse>, ApiError> {
    let purged = state.service.purge_deposit(&caller, name).await?;
    tracing::info!(name = %purged.name, versions = purged.purged_versions, "deposit purged");
    Ok(Json(purged))
}
