//! `GET /v1/health`: readiness, without a client certificate. 200 when the database answers and
//! the keyring is open; 503 otherwise, with the same JSON shape.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use keysafe_proto::api::Health;

pub async fn get(State(state): State<AppState>) -> Response {
    let db_ok = state.service.store().ping().await.is_ok();
    let sealed = state.service.is_sealed();
    let status = match (db_ok, sealed) {
        (true, false) => "ok",
        (false, _) => "database_unavailable",
        (true, true) => "sealed",
    };
    let body = Json(Health {
        status: status.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        fingerprint: state.fingerprint.clone(),
        seal: state.service.seal_kind().map(str::to_owned),
        sealed_reason: state.service.sealed_reason(),
    });
    if status == "ok" {
        body.into_response()
    } else {
        (http::StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}
