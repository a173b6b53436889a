//! Answers too large to hold in memory (backups): the body is handed over chunk by chunk as it
//! arrives, so these requests do not go through [`KeysafeClient::attempt`], which reads a whole
//! answer. Their own loop tries the servers in order only while nothing was sent; once sent, a
//! request is never repeated.

use super::request::{AttemptError, api_error, transport_error};
use super::{Answer, KeysafeClient, Req};
use crate::error::ClientError;
use keysafe_proto::HEADER_TOKEN;
use std::time::Duration;

impl KeysafeClient {
    /// Sends a request whose answer may be large and hands its body, chunk by chunk, to
    /// `each` as it arrives (never whole in memory). Tried on the servers in order while
    /// nothing was sent; once sent, never repeated. `timeout` bounds the whole exchange.
    /// Answers how many body bytes were handed over.
    pub(crate) async fn stream_answer(
        &self,
        req: Req,
        timeout: Duration,
        mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ClientError> {
        let mut last = None;
        for i in self.order() {
            let ep = &self.inner.endpoints[i];
            let mut rb = ep
                .http
                .request(req.method.clone(), format!("{}{}", ep.base, req.path))
                .headers(req.headers.clone())
                .timeout(timeout);
            if let Some(v) = self.token_header() {
                rb = rb.header(HEADER_TOKEN, v);
            }
            if let Some(body) = &req.body {
                rb = rb.body(body.clone());
            }
            let mut resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => match transport_error(ep, e) {
                    AttemptError::NotSent(e) => {
                        self.mark(i, false);
                        last = Some(e);
                        continue;
                    }
                    AttemptError::MaybeSent(e)
                    | AttemptError::ServerError(e)
                    | AttemptError::Final(e) => return Err(e),
                },
            };
            self.mark(i, true);
            if let Some(t) = resp
                .headers()
                .get(HEADER_TOKEN)
                .and_then(|v| v.to_str().ok())
                && let Err(e) = self.inner.token.offer(t)
            {
                tracing::error!(error = %e, "cannot store the new sequenced token");
            }
            let status = resp.status();
            if !status.is_success() {
                let headers = resp.headers().clone();
                let body = resp.bytes().await.unwrap_or_default();
                return Err(api_error(&Answer {
                    status,
                    headers,
                    body,
                }));
            }
            let mut n = 0u64;
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        each(&chunk).map_err(|e| ClientError::Invalid(e.to_string()))?;
                        n += chunk.len() as u64;
                    }
                    Ok(None) => return Ok(n),
                    Err(e) => {
                        return Err(match transport_error(ep, e) {
                            AttemptError::NotSent(e)
                            | AttemptError::MaybeSent(e)
                            | AttemptError::ServerError(e)
                            | AttemptError::Final(e) => e,
                        });
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Invalid("no server to try".into())))
    }
}
