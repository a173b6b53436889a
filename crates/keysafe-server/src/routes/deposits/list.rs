//! `GET /v1/deposits?prefix=&limit=&page_token=&deleted=`: the caller's deposits by name.

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_proto::api::{DepositList, ListQuery};

pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<DepositList>, ApiError> {
    Ok(Json(state.service.list_deposits(&caller, q).await?))
}
