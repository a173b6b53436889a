//! `GET /v1/deposits?prefix=&limit=&page_token=&deleted=`: the caller's deposits by name.

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use keysafe_proto::api::{DepositList, ListQuery};

/// Lists the caller's deposits (or a group's) by name.
#[utoipa::path(
    get, path = "/v1/deposits", tag = "deposits", params(ListQuery),
    responses(
        (status = 200, description = "One page of deposits, by name.", body = DepositList),
        (status = 403, description = "Another client's deposits."),
        (status = 404, description = "No such owner visible to the caller."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<DepositList>, ApiError> {
    Ok(Json(state.service.list_deposits(&caller, q).await?))
}
