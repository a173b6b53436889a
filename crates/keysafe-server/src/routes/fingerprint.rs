//! `GET /?a=fingerprint`: the server's own fingerprint as plain text (as Key Trustee Server
//! answers it), so a client can pin it. Needs no client certificate.

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;
use axum::extract::State;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Query {
    a: Option<String>,
}

#[utoipa::path(
    get, path = "/", tag = "public",
    params(("a" = String, Query, description = "Must be `fingerprint`.")),
    responses(
        (status = 200, description = "The server's fingerprint, 64 hex characters.", content_type = "text/plain", body = String),
        (status = 404, description = "`a` is missing or not `fingerprint`."),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<Query>,
) -> Result<String, ApiError> {
    match q.a.as_deref() {
        Some("fingerprint") => Ok(state.fingerprint().to_string()),
        _ => Err(ApiError::new(
            keysafe_proto::ErrorCode::NoRoute,
            "GET / answers only ?a=fingerprint; the API lives under /v1/ (see docs/api.md)",
        )),
    }
}
