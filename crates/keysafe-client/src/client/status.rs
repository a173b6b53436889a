//! Asking the servers about themselves: health (of the first that answers, or of each one in
//! turn for `keysafe status`) and the server's own fingerprint.

use super::request::AttemptError;
use super::{KeysafeClient, Req};
use crate::error::ClientError;
use keysafe_proto::ClientFingerprint;
use keysafe_proto::api::Health;
use serde::Serialize;
use std::time::Instant;

/// What [`KeysafeClient::probe`] found out about one server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub url: String,
    /// It completed a TLS handshake and answered `/v1/health` (any status).
    pub answers: bool,
    /// Its health status (`ok`, `sealed`, `database_unavailable`), when it answered.
    pub health: Option<String>,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
    /// The fingerprint pinned for it (absent when trusted through a CA certificate).
    pub pinned: Option<String>,
    /// The fingerprint it presented.
    pub presented: Option<String>,
    /// `Some(true)` when the presented key is the pinned one.
    pub fingerprint_matches: Option<bool>,
    /// The client passes it over for now because it failed recently.
    pub marked_down: bool,
}

impl KeysafeClient {
    /// `GET /v1/health` on the first server that answers (any status: a sealed server answers
    /// 503 with the same shape).
    pub async fn health(&self) -> Result<Health, ClientError> {
        let mut req = Req::get("/v1/health");
        req.any_status = true;
        let answer = self.send(req).await?;
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Unexpected {
            status: answer.status.as_u16(),
            detail: format!("invalid health answer: {e}"),
        })
    }

    /// Asks every server for its health, one after the other, without retries: for
    /// `keysafe status`. Also updates which servers are considered down.
    pub async fn probe(&self) -> Vec<ServerStatus> {
        let mut out = Vec::with_capacity(self.inner.endpoints.len());
        for (i, ep) in self.inner.endpoints.iter().enumerate() {
            let mut req = Req::get("/v1/health");
            req.any_status = true;
            let started = Instant::now();
            let result = self.attempt(i, &req).await;
            let latency = started.elapsed().as_secs_f64() * 1000.0;
            let presented = ep.observed.lock().ok().and_then(|o| o.fingerprint.clone());
            let pinned = ep.pinned.clone();
            let mut st = ServerStatus {
                url: ep.base.clone(),
                answers: false,
                health: None,
                latency_ms: None,
                error: None,
                pinned: pinned.as_ref().map(|p| p.as_str().to_owned()),
                presented: presented.as_ref().map(|p| p.as_str().to_owned()),
                fingerprint_matches: match (&pinned, &presented) {
                    (Some(p), Some(s)) => Some(p == s),
                    _ => None,
                },
                marked_down: false,
            };
            match result {
                Ok(answer) => {
                    st.answers = true;
                    st.latency_ms = Some(latency);
                    let health = serde_json::from_slice::<Health>(&answer.body)
                        .map(|h| h.status)
                        .unwrap_or_else(|_| format!("HTTP {}", answer.status.as_u16()));
                    let ok = answer.status.is_success();
                    self.mark(i, ok);
                    st.health = Some(health);
                }
                Err(
                    AttemptError::NotSent(e)
                    | AttemptError::MaybeSent(e)
                    | AttemptError::ServerError(e)
                    | AttemptError::Final(e),
                ) => {
                    self.mark(i, false);
                    st.error = Some(e.to_string());
                }
            }
            out.push(st);
        }
        for (st, ep) in out.iter_mut().zip(&self.inner.endpoints) {
            st.marked_down = ep.health.lock().ok().and_then(|h| h.failed_at).is_some();
        }
        out
    }

    /// `GET /?a=fingerprint`.
    pub async fn server_fingerprint(&self) -> Result<ClientFingerprint, ClientError> {
        let answer = self.send(Req::get("/?a=fingerprint")).await?;
        let text = String::from_utf8_lossy(&answer.body);
        ClientFingerprint::parse(&text).map_err(|e| ClientError::Unexpected {
            status: 200,
            detail: e.to_string(),
        })
    }
}
