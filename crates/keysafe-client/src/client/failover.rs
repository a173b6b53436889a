//! The failover loop ([`KeysafeClient::send`]) and the server order it follows: the configured
//! order with servers that failed recently last, which servers count as failed, bounded passes
//! with jittered exponential backoff between them, and which failures allow another attempt
//! (the parent module has the table). Most typed calls go through here, by way of
//! [`KeysafeClient::json`]; racing every server at once, probing each one and streamed answers
//! have loops of their own. Building and sending one request to one server is
//! [`KeysafeClient::attempt`]'s job.

use super::request::{AttemptError, Retry};
use super::{Answer, KeysafeClient, Req, random_u64};
use crate::error::ClientError;
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl KeysafeClient {
    /// The order to try servers in: those not marked down, in the configured order, then those
    /// marked down (oldest failure first).
    pub(super) fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let reprobe = self.inner.failover.reprobe_after;
        let mut up = Vec::new();
        let mut down = Vec::new();
        for (i, ep) in self.inner.endpoints.iter().enumerate() {
            let failed_at = ep.health.lock().ok().and_then(|h| h.failed_at);
            match failed_at {
                Some(t) if now.duration_since(t) < reprobe => down.push((t, i)),
                _ => up.push(i),
            }
        }
        down.sort();
        up.extend(down.into_iter().map(|(_, i)| i));
        up
    }

    pub(super) fn mark(&self, i: usize, ok: bool) {
        let mut changed = false;
        if let Some(ep) = self.inner.endpoints.get(i)
            && let Ok(mut h) = ep.health.lock()
        {
            changed = !ok || h.failed_at.is_some();
            h.failed_at = if ok { None } else { Some(Instant::now()) };
        }
        if ok {
            self.inner.last.store(i, Ordering::Relaxed);
        }
        if changed && let Some(path) = &self.inner.state_file {
            self.save_state(path);
        }
    }

    pub(super) fn backoff(&self, pass: u32) -> Duration {
        let f = &self.inner.failover;
        let cap = f
            .backoff_base
            .saturating_mul(1u32 << pass.min(16))
            .min(f.backoff_max);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(random_u64() % (millis + 1))
    }

    /// The failover loop: every API request goes through here (see the module documentation).
    pub(crate) async fn send(&self, req: Req) -> Result<Answer, ClientError> {
        let order = self.order();
        let passes = 1 + self.inner.failover.retries;
        // The last failure per server, in the order first tried.
        let mut tried: Vec<(usize, String)> = Vec::new();
        let mut last: Option<ClientError> = None;
        let mut not_retried = false;
        let record = |tried: &mut Vec<(usize, String)>, i: usize, e: &ClientError| {
            let msg = e.to_string();
            match tried.iter_mut().find(|(j, _)| *j == i) {
                Some(slot) => slot.1 = msg,
                None => tried.push((i, msg)),
            }
        };
        'passes: for pass in 0..passes {
            if pass > 0 {
                tokio::time::sleep(self.backoff(pass - 1)).await;
            }
            for &i in &order {
                match self.attempt(i, &req).await {
                    Ok(answer) => {
                        self.mark(i, true);
                        return Ok(answer);
                    }
                    Err(AttemptError::Final(e)) => {
                        if !matches!(e, ClientError::FingerprintMismatch { .. }) {
                            self.mark(i, true);
                        }
                        return Err(e);
                    }
                    Err(AttemptError::NotSent(e)) => {
                        self.mark(i, false);
                        record(&mut tried, i, &e);
                        last = Some(e);
                    }
                    Err(AttemptError::MaybeSent(e) | AttemptError::ServerError(e)) => {
                        self.mark(i, false);
                        record(&mut tried, i, &e);
                        last = Some(e);
                        if req.retry != Retry::Idempotent {
                            not_retried = true;
                            break 'passes;
                        }
                    }
                }
            }
        }
        let last = last.unwrap_or_else(|| ClientError::Invalid("no server to try".into()));
        if self.inner.endpoints.len() <= 1 {
            return Err(last);
        }
        Err(ClientError::AllServersFailed {
            tried: tried
                .into_iter()
                .map(|(i, msg)| {
                    let url = &self.inner.endpoints[i].base;
                    if msg.contains(url.as_str()) {
                        msg
                    } else {
                        format!("{url}: {msg}")
                    }
                })
                .collect(),
            last: Box::new(last),
            not_retried,
        })
    }

    pub(crate) async fn json<T: DeserializeOwned>(&self, req: Req) -> Result<T, ClientError> {
        let answer = self.send(req).await?;
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Unexpected {
            status: answer.status.as_u16(),
            detail: format!("invalid JSON: {e}"),
        })
    }

    /// The server the next request would go to first.
    pub fn preferred_server(&self) -> String {
        self.order()
            .first()
            .map(|&i| self.inner.endpoints[i].base.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::client::ClientOptions;
    use crate::tls::ServerTrust;

    #[test]
    fn backoff_is_bounded_with_jitter() {
        let c = KeysafeClient::new(
            "https://127.0.0.1:1",
            None,
            &ServerTrust::TrustOnFirstUse,
            &ClientOptions::default(),
        )
        .unwrap();
        for pass in 0..40 {
            assert!(c.backoff(pass) <= Duration::from_secs(2));
        }
        assert!(c.backoff(0) <= Duration::from_millis(100));
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| c.backoff(4)).collect();
        assert!(distinct.len() > 1, "no jitter");
    }
}
