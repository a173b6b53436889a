//! Per-request plumbing: a request id (taken from a well-formed `x-request-id` header or
//! generated), the request's log context carrying it (`request_log`), the whole-request deadline,
//! the request's audit entry (sampled for callers nobody authenticated, see `anonymous`), one log
//! line and the metrics per request, `Cache-Control: no-store` on every answer, and the JSON
//! rendering of errors (with the request id in the body). Metric labels are bounded: the method is
//! one of a fixed set and the route is the matched template (`-` when none matched), never the
//! path.

use crate::anonymous::Sample;
use crate::config::AuditFailurePolicy;
use crate::error::ApiError;
use crate::headers::{REQUEST_ID, TOKEN};
use crate::identity::PeerIdentity;
use crate::request_log::RequestLog;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::Request;
use axum::extract::{MatchedPath, State};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use http::HeaderValue;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use keysafe_core::audit::AuditScope;
use keysafe_proto::ErrorCode;
use keysafe_proto::audit::AuditEvent;
use keysafe_proto::{ErrorBody, ErrorDetail};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A fresh request id: a per-process sequence number through SipHash under a key drawn at
/// random when the process starts. Unique within the process, as unpredictable as random bytes
/// to anyone without the key (an id reveals nothing of how many requests came between two), and
/// without a call into the system's or the crypto library's random generator per request.
fn new_request_id() -> String {
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Sixteen lowercase hex digits, most significant first (as `{:016x}`), without the
    // formatter.
    keysafe_proto::lower_hex(&KEY.get_or_init(Default::default).hash_one(n).to_be_bytes())
}

fn accept_incoming(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let well_formed = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| s.to_owned())
}

/// Where authentication leaves a sequenced token it issued, so the response carries it whatever
/// the handler answers (a refused request must not lose a rotation).
#[derive(Clone, Default)]
pub struct TokenSlot(Arc<Mutex<Option<String>>>);

impl std::fmt::Debug for TokenSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSlot([redacted])")
    }
}

impl TokenSlot {
    pub fn put(&self, token: String) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(token);
        }
    }

    fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// The method as a metric and audit label: one of a fixed set, whatever the client sent.
pub(crate) fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

/// Refusals that name a registered client: its certificate was found, so the entry is
/// attributable and kept in full like any authenticated request's.
fn names_a_client(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(
            ErrorCode::ClientPending
                | ErrorCode::ClientDisabled
                | ErrorCode::SuspectedClone
                | ErrorCode::TokenRequired
        )
    )
}

fn request_timed_out() -> Response {
    ApiError::new(
        ErrorCode::RequestTimeout,
        "the request was not completed within the time the server allows",
    )
    .into_response()
}

/// Routes whose work grows with the whole database rather than with the request, so no
/// request deadline applies: the backup (an administrator's, with a small body; its connection
/// limits still apply).
fn unbounded_route(route: &str) -> bool {
    route == "/v1/admin/backup"
}

/// Routes that answer even when the audit trail refuses everything else, so that operators can
/// see what is wrong: health, the server fingerprint and the audit public key.
fn exempt_from_audit_refusal(path: &str) -> bool {
    matches!(path, "/" | "/v1/health" | "/v1/audit/public-key")
}

fn audit_refusal() -> Response {
    ApiError::new(
        ErrorCode::Unavailable,
        "the audit trail cannot record requests now; refusing to serve without it",
    )
    .into_response()
}

/// The request path, capped, for the audit entry (names and fingerprints; never a query).
fn audit_target(path: &str) -> String {
    let mut end = path.len().min(512);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_owned()
}

pub async fn request_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(accept_incoming)
        .unwrap_or_else(new_request_id);
    let peer = req.extensions().get::<PeerIdentity>().cloned();
    // Every line logged below, and by the handler on this task, names the request.
    RequestLog::new(id.clone(), peer.clone())
        .scope(serve(state, req, next, id, peer))
        .await
}

async fn serve(
    state: AppState,
    mut req: Request,
    next: Next,
    id: String,
    peer: Option<PeerIdentity>,
) -> Response {
    let slot = TokenSlot::default();
    req.extensions_mut().insert(slot.clone());
    let remote_text = peer.as_ref().map_or("", |p| &*p.remote_text);
    let started = Instant::now();
    // ---- audit trail and metrics ----
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("-", |m| m.as_str());
    let method = method_label(req.method());
    let mut operation = String::with_capacity(method.len() + 1 + route.len());
    operation.push_str(method);
    operation.push(' ');
    operation.push_str(route);
    let path = req.uri().path().to_owned();
    let exempt = exempt_from_audit_refusal(&path);
    let fail_closed = state.audit.policy() == AuditFailurePolicy::FailClosed;
    let scope = AuditScope::new(AuditEvent {
        time: keysafe_proto::Timestamp::now().unix_millis(),
        node: state.audit.node.clone(),
        request_id: id.clone(),
        remote: remote_text.to_owned(),
        client: peer
            .as_ref()
            .and_then(|p| p.fingerprint.as_ref())
            .map(|f| f.as_str().to_owned()),
        org: None,
        operation: operation.clone(),
        target: audit_target(&path),
        version: None,
        outcome: String::new(),
    });
    let mut response = if fail_closed && !exempt && !state.audit.accepting() {
        tracing::warn!("refused: the audit trail is not recording");
        audit_refusal()
    } else {
        let run = scope.clone().run(next.run(req));
        if unbounded_route(route) {
            run.await
        } else {
            let deadline = state.request_timeout;
            match tokio::time::timeout(deadline, run).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!(?deadline, "request timed out");
                    request_timed_out()
                }
            }
        }
    };
    if let Some(mut event) = scope.take_unrecorded() {
        let status = response.status().as_u16();
        let code = response.extensions().get::<ApiError>().map(|e| e.code);
        event.outcome = match code {
            Some(c) => c.as_str().to_owned(),
            None if status < 400 => "ok".to_owned(),
            None => format!("http_{status}"),
        };
        // Nobody authenticated the caller and nothing changed: sampled, so that a caller
        // without credentials cannot grow the chain at its request rate.
        let anonymous = event.org.is_none() && !names_a_client(code);
        let record = if anonymous {
            let (sample, summary) = state.anonymous.sample(peer.as_ref().map(|p| p.remote.ip()));
            if let Some(summary) = summary {
                state.audit.record(summary);
            }
            sample == Sample::Record
        } else {
            true
        };
        if record && !state.audit.record(event) && fail_closed && !exempt {
            response = audit_refusal();
        }
    }
    // ---- end audit trail ----
    if let Some(err) = response.extensions_mut().remove::<ApiError>() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: err.code,
                message: err.message,
                request_id: Some(id.clone()),
            },
        };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        *response.body_mut() = Body::from(json);
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID.clone(), v);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(token) = slot.take()
        && let Ok(v) = HeaderValue::from_str(&token)
    {
        headers.insert(TOKEN.clone(), v);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let micros = elapsed.as_micros() as u64;
    let status_label: &'static str = match response.status().as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        410 => "410",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        // Bounded label values: anything else is "other".
        _ => "other",
    };
    crate::metrics::record_request(&operation, status_label, elapsed);
    // Successful requests log at debug: at tens of thousands of requests a second an info line
    // each would cost more than the request. The audit trail, not the log, records accesses.
    // Health answers log their state when it changes (routes/health.rs), not per probe.
    let logged_elsewhere = response
        .extensions()
        .get::<crate::health_log::LoggedOnChange>()
        .is_some();
    let path = path.as_str();
    if logged_elsewhere {
        tracing::debug!(operation, path, status, micros, "request");
    } else if status >= 500 {
        tracing::warn!(operation, path, status, micros, "request failed");
    } else if status >= 400 {
        tracing::info!(operation, path, status, micros, "request refused");
    } else {
        tracing::debug!(operation, path, status, micros, "request");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_and_show_no_sequence() {
        let ids: Vec<String> = (0..10_000).map(|_| new_request_id()).collect();
        assert!(ids.iter().all(|id| id.len() == 16
            && id.bytes().all(|b| b.is_ascii_hexdigit())
            && accept_incoming(&HeaderValue::from_str(id).unwrap()).is_some()));
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Consecutive ids differ in about half their bits, not in the last few.
        let differing: u32 = ids
            .windows(2)
            .map(|w| {
                let a = u64::from_str_radix(&w[0], 16).unwrap();
                let b = u64::from_str_radix(&w[1], 16).unwrap();
                (a ^ b).count_ones()
            })
            .sum();
        let mean = f64::from(differing) / (ids.len() - 1) as f64;
        assert!((24.0..40.0).contains(&mean), "mean bits differing: {mean}");
    }
}
