//! `GET /v1/shared`: deposits others granted the caller; `GET /v1/recipients?principal=`: the age
//! recipient of a client or group of the caller's organisation.

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_proto::api::{RecipientInfo, SharedList};
use serde::Deserialize;

pub async fn shared(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<Json<SharedList>, ApiError> {
    Ok(Json(state.service.list_shared(&caller).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientQuery {
    principal: String,
}

pub async fn recipient(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<RecipientQuery>,
) -> Result<Json<RecipientInfo>, ApiError> {
    Ok(Json(state.service.recipient(&caller, &q.principal).await?))
}
