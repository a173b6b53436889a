//! `GET /v1/health`: readiness, without a client certificate. 200 when the database answers,
//! the keyring is open and the audit trail records; 503 otherwise, with the same JSON shape.
//! `checks` names the state of each part.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use keysafe_proto::api::Health;
use std::collections::BTreeMap;

pub async fn get(State(state): State<AppState>) -> Response {
    let db_ok = state.service.store().ping().await.is_ok();
    let sealed = state.service.is_sealed();
    let audit = state.audit.state();
    let status = match (db_ok, sealed, audit) {
        (false, _, _) => "database_unavailable",
        (true, true, _) => "sealed",
        (true, false, "ok") => "ok",
        // Serving on regardless, as configured: ready, with the audit check saying otherwise.
        (true, false, _)
            if state.audit.policy() == crate::config::AuditFailurePolicy::InsecureContinue =>
        {
            "ok"
        }
        (true, false, _) => "audit_unavailable",
    };
    let mut checks = BTreeMap::new();
    checks.insert(
        "database".to_owned(),
        if db_ok { "ok" } else { "unavailable" }.to_owned(),
    );
    checks.insert(
        "seal".to_owned(),
        if sealed { "sealed" } else { "ok" }.to_owned(),
    );
    checks.insert("audit".to_owned(), audit.to_owned());
    let body = Json(Health {
        status: status.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        fingerprint: state.fingerprint.clone(),
        seal: state.service.seal_kind().map(str::to_owned),
        sealed_reason: state.service.sealed_reason(),
        checks,
    });
    if status == "ok" {
        body.into_response()
    } else {
        (http::StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}
