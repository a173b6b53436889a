//! `GET /v1/health`: readiness, without a client certificate. 200 when the database answers,
//! the keyring is open and the audit trail records; 503 otherwise, with the same JSON shape.
//! `checks` names the state of each part. While only a standby of the database answers (a
//! failover), the node still serves reads: 200 with status `read_only` (writes answer `503
//! read_only`), and the audit trail records into the node's spool (`spooling`). The TLS certificate's expiry is a warning, never a
//! failure: a certificate within 30 days of its end adds `warnings`, and the server stays ready.
//!
//! Probes come every few seconds from load balancers and orchestrators. A changed status is
//! logged once ([`crate::health_log::HealthLog`]); the probes themselves log at debug whatever they answer, so a
//! server that stays sealed for a night does not write a warning per probe.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use keysafe_proto::api::Health;
use std::collections::BTreeMap;

#[utoipa::path(
    get, path = "/v1/health", tag = "public",
    responses(
        (status = 200, description = "Ready (status `ok` or `read_only`).", body = keysafe_proto::api::Health),
        (status = 503, description = "Not ready: the same body, with the reason in `status` and `checks`.", body = keysafe_proto::api::Health),
    ),
)]
pub async fn get(State(state): State<AppState>) -> Response {
    let database = match state.service.store().ping().await {
        Ok(()) => "ok",
        Err(keysafe_core::store::StoreError::ReadOnly) => "read_only",
        Err(_) => "unavailable",
    };
    let db_ok = database != "unavailable";
    let sealed = state.service.is_sealed();
    let audit = state.audit.state();
    let recording = matches!(audit, "ok" | "spooling");
    let status = match (db_ok, sealed, recording) {
        (false, _, _) => "database_unavailable",
        (true, true, _) => "sealed",
        (true, false, true) if database == "read_only" => "read_only",
        (true, false, true) => "ok",
        // Serving on regardless, as configured: ready, with the audit check saying otherwise.
        (true, false, false)
            if state.audit.policy() == crate::config::AuditFailurePolicy::InsecureContinue =>
        {
            if database == "read_only" {
                "read_only"
            } else {
                "ok"
            }
        }
        (true, false, false) => "audit_unavailable",
    };
    let mut checks = BTreeMap::new();
    checks.insert("database".to_owned(), database.to_owned());
    checks.insert(
        "seal".to_owned(),
        if sealed { "sealed" } else { "ok" }.to_owned(),
    );
    checks.insert("audit".to_owned(), audit.to_owned());
    let (tls_check, warnings) = certificate_check(&state.tls.certificate(), unix_now());
    checks.insert("tls_certificate".to_owned(), tls_check.to_owned());
    state.health_log.observe(status, &checks);
    let body = Json(Health {
        status: status.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        fingerprint: state.fingerprint(),
        seal: state.service.seal_kind().map(str::to_owned),
        sealed_reason: state.service.sealed_reason(),
        checks,
        warnings,
    });
    // Reads are served while read-only, so the node stays ready.
    let mut response = if matches!(status, "ok" | "read_only") {
        body.into_response()
    } else {
        (http::StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    };
    response
        .extensions_mut()
        .insert(crate::health_log::LoggedOnChange);
    response
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The certificate's state and the warnings it calls for, at `now` (Unix seconds).
fn certificate_check(
    cert: &keysafe_proto::identity::CertInfo,
    now: i64,
) -> (&'static str, Vec<String>) {
    let expires = keysafe_proto::Timestamp::from_unix_millis(cert.not_after.saturating_mul(1000))
        .to_rfc3339();
    let how = if cert.self_signed {
        "keysafe admin tls renew"
    } else {
        "have the CA issue a new one"
    };
    let left = cert.not_after - now;
    if left <= 0 {
        (
            "expired",
            vec![format!(
                "the TLS certificate expired at {expires}; clients that check its dates refuse it: renew it ({how}); it is reloaded without a restart"
            )],
        )
    } else if left < crate::tls::EXPIRY_WARNING.as_secs() as i64 {
        (
            "expires_soon",
            vec![format!(
                "the TLS certificate expires in {} days, at {expires}: renew it ({how}); it is reloaded without a restart",
                left / 86400
            )],
        )
    } else {
        ("ok", Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_warns_thirty_days_ahead_and_never_fails() {
        let cert = |not_after: i64, self_signed: bool| keysafe_proto::identity::CertInfo {
            not_before: 0,
            not_after,
            common_name: None,
            subject_alt_names: Vec::new(),
            self_signed,
            fingerprint: keysafe_proto::ClientFingerprint::parse(&"a".repeat(64)).unwrap(),
        };
        let now = 1_800_000_000;
        let day = 86400;
        assert_eq!(certificate_check(&cert(now + 31 * day, true), now).0, "ok");
        assert!(
            certificate_check(&cert(now + 31 * day, true), now)
                .1
                .is_empty()
        );
        let (state, w) = certificate_check(&cert(now + 29 * day + 5, true), now);
        assert_eq!(state, "expires_soon");
        assert!(w[0].contains("expires in 29 days") && w[0].contains("keysafe admin tls renew"));
        let (state, w) = certificate_check(&cert(now - 1, false), now);
        assert_eq!(state, "expired");
        assert!(w[0].contains("have the CA issue a new one"), "{w:?}");
    }
}
