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

#[utoipa::path(
    get, path = "/v1/shared", tag = "deposits",
    responses((status = 200, description = "Deposits of other principals shared with the caller.", body = SharedList)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn shared(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<Json<SharedList>, ApiError> {
    Ok(Json(state.service.list_shared(&caller).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecipientQuery {
    /// A client fingerprint or `group:NAME`.
    principal: String,
}

#[utoipa::path(
    get, path = "/v1/recipients", tag = "deposits", params(RecipientQuery),
    responses(
        (status = 200, description = "The age recipient of a principal.", body = RecipientInfo),
        (status = 404, description = "No such principal visible to the caller."),
        (status = 409, description = "The client has no recipient."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn recipient(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<RecipientQuery>,
) -> Result<Json<RecipientInfo>, ApiError> {
    Ok(Json(state.service.recipient(&caller, &q.principal).await?))
}
