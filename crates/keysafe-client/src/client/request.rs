//! One API request and its answer: [`Req`] describes a request independently of the server it
//! goes to; [`KeysafeClient::attempt`] builds it for one server (with the sequenced token), sends
//! it and reads the whole answer; the rest classifies what went wrong ([`AttemptError`],
//! [`is_retryable`]) so that the failover loop knows whether to try again. Which server, and how
//! often, is decided elsewhere.

use super::{Endpoint, KeysafeClient};
use crate::error::ClientError;
use bytes::Bytes;
use keysafe_proto::{ErrorBody, HEADER_TOKEN};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;

/// Whether a request may be repeated after it may have reached a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Safe to repeat: retried on any connection failure and on 5xx.
    Idempotent,
    /// Retried (elsewhere) only when no byte of it was sent.
    OnlyIfNotSent,
}

/// One API request, independent of the server it goes to.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(super) method: Method,
    /// Path and query string, starting with `/`.
    pub(super) path: String,
    pub(super) headers: HeaderMap,
    pub(super) body: Option<Bytes>,
    pub(super) retry: Retry,
    /// Return non-2xx answers as they are instead of as errors (health).
    pub(super) any_status: bool,
    /// Return `304 Not Modified` as an answer (conditional deposit reads).
    pub(super) not_modified_ok: bool,
}

impl Req {
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Self {
        let retry = if method == Method::GET || method == Method::HEAD {
            Retry::Idempotent
        } else {
            Retry::OnlyIfNotSent
        };
        Self {
            method,
            path: path.into(),
            headers: HeaderMap::new(),
            body: None,
            retry,
            any_status: false,
            not_modified_ok: false,
        }
    }

    pub(crate) fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    pub(crate) fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }

    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub(crate) fn body(mut self, content_type: &'static str, body: Bytes) -> Self {
        self.headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        self.body = Some(body);
        self
    }

    pub(crate) fn json<T: Serialize>(self, v: &T) -> Result<Self, ClientError> {
        let body = serde_json::to_vec(v)
            .map_err(|e| ClientError::Invalid(format!("cannot encode the request: {e}")))?;
        Ok(self.body("application/json", body.into()))
    }

    /// Appends a query string built from a serialisable value (a struct of optional fields or
    /// a list of pairs); absent fields are left out.
    pub(crate) fn query<T: Serialize>(mut self, q: &T) -> Result<Self, ClientError> {
        let v = serde_json::to_value(q)
            .map_err(|e| ClientError::Invalid(format!("cannot encode the query: {e}")))?;
        let pairs: Vec<(String, String)> = match v {
            serde_json::Value::Object(m) => m
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
            serde_json::Value::Array(items) => items
                .into_iter()
                .filter_map(|p| match p {
                    serde_json::Value::Array(kv) if kv.len() == 2 => Some((
                        kv[0].as_str().unwrap_or_default().to_owned(),
                        kv[1].as_str().unwrap_or_default().to_owned(),
                    )),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut out = String::new();
        for (k, v) in pairs {
            out.push(if out.is_empty() && !self.path.contains('?') {
                '?'
            } else {
                '&'
            });
            out.push_str(&percent_encode(&k));
            out.push('=');
            out.push_str(&percent_encode(&v));
        }
        self.path.push_str(&out);
        Ok(self)
    }
}

pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A complete answer: status, headers and the whole body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// How one attempt failed.
pub(super) enum AttemptError {
    /// Nothing was sent: safe to try elsewhere whatever the request.
    NotSent(ClientError),
    /// The connection broke or timed out after it was made: the request may have been applied.
    MaybeSent(ClientError),
    /// The server answered 5xx (or `sealed`/`unavailable`): it received the request.
    ServerError(ClientError),
    /// An answer that stands (4xx), or a security failure: no retry, no failover.
    Final(ClientError),
}

impl KeysafeClient {
    /// The `x-keysafe-token` value to send, if this client holds a token.
    pub(super) fn token_header(&self) -> Option<HeaderValue> {
        let t = self.inner.token.current()?;
        HeaderValue::from_str(&t).ok()
    }

    /// One attempt of one request against one server: the only place a request is built and
    /// sent, and an answer read.
    pub(super) async fn attempt(&self, i: usize, req: &Req) -> Result<Answer, AttemptError> {
        let ep = &self.inner.endpoints[i];
        let mut rb = ep
            .http
            .request(req.method.clone(), format!("{}{}", ep.base, req.path))
            .headers(req.headers.clone());
        if req.path != "/v1/health"
            && let Some(v) = self.token_header()
        {
            rb = rb.header(HEADER_TOKEN, v);
        }
        if let Some(body) = &req.body {
            rb = rb.body(body.clone());
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => return Err(transport_error(ep, e)),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        if let Some(t) = headers.get(HEADER_TOKEN).and_then(|v| v.to_str().ok())
            && let Err(e) = self.inner.token.offer(t)
        {
            // The request itself succeeded; losing the token would lock this client out later.
            tracing::error!(error = %e, "cannot store the new sequenced token");
        }
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(transport_error(ep, e)),
        };
        let answer = Answer {
            status,
            headers,
            body,
        };
        if status.is_success()
            || req.any_status
            || (req.not_modified_ok && status == StatusCode::NOT_MODIFIED)
        {
            return Ok(answer);
        }
        let e = api_error(&answer);
        if req.retry != Retry::Idempotent && e.code() == Some(keysafe_proto::ErrorCode::ReadOnly) {
            // Refused before anything changed, and every server shares the database that
            // refuses writes: reported as it is (with when to retry), not tried elsewhere.
            Err(AttemptError::Final(e))
        } else if is_retryable(&e) {
            Err(AttemptError::ServerError(e))
        } else {
            Err(AttemptError::Final(e))
        }
    }
}

pub(super) fn transport_error(ep: &Endpoint, e: reqwest::Error) -> AttemptError {
    if let Ok(mut obs) = ep.observed.lock()
        && let Some((expected, actual)) = obs.mismatch.take()
    {
        return AttemptError::Final(ClientError::FingerprintMismatch { expected, actual });
    }
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    let err = ClientError::Connect {
        url: ep.base.clone(),
        reason,
    };
    if e.is_connect() {
        AttemptError::NotSent(err)
    } else {
        AttemptError::MaybeSent(err)
    }
}

pub(super) fn api_error(answer: &Answer) -> ClientError {
    let status = answer.status;
    let body = &answer.body;
    // A server that asks to be retried later (`read_only` during a database failover) says
    // when; the message carries it so that whoever reads it knows what to do.
    let retry_after = answer
        .headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ClientError::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: match retry_after {
                Some(s) => format!("{} (retry after {s} s)", b.error.message),
                None => b.error.message,
            },
            request_id: b.error.request_id,
        },
        Err(_) => ClientError::Unexpected {
            status: status.as_u16(),
            detail: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

/// True if the error means no server could answer the request, so that a retry elsewhere (or a
/// stale cached copy) may help: connection failures, 5xx, `sealed`, `unavailable`.
pub fn is_retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Api { code, status, .. } => {
            code.is_retryable() || StatusCode::from_u16(*status).is_ok_and(|s| s.is_server_error())
        }
        ClientError::Unexpected { status, .. } => {
            StatusCode::from_u16(*status).is_ok_and(|s| s.is_server_error())
        }
        ClientError::AllServersFailed { last, .. } => is_retryable(last),
        ClientError::CacheTooOld { cause, .. } => is_retryable(cause),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use keysafe_proto::ClientFingerprint;
    use keysafe_proto::api::ListQuery;

    #[test]
    fn only_get_is_idempotent() {
        assert_eq!(Req::get("/x").retry, Retry::Idempotent);
        for m in [Method::PUT, Method::POST, Method::DELETE, Method::PATCH] {
            assert_eq!(Req::new(m, "/x").retry, Retry::OnlyIfNotSent);
        }
    }

    #[test]
    fn query_strings_are_encoded_and_skip_absent_fields() {
        let q = ListQuery {
            prefix: Some("a b/&".into()),
            limit: Some(5),
            page_token: None,
            deleted: Some(true),
            owner: None,
        };
        let r = Req::get("/v1/deposits").query(&q).unwrap();
        assert_eq!(
            r.path,
            "/v1/deposits?deleted=true&limit=5&prefix=a%20b%2F%26"
        );
        let r = Req::get("/a")
            .query(&vec![("org", "acme"), ("state", "pending")])
            .unwrap();
        assert_eq!(r.path, "/a?org=acme&state=pending");
        let r = Req::get("/a").query(&Vec::<(&str, &str)>::new()).unwrap();
        assert_eq!(r.path, "/a");
    }

    #[test]
    fn retryable_errors() {
        let connect = ClientError::Connect {
            url: "https://a".into(),
            reason: "refused".into(),
        };
        assert!(is_retryable(&connect));
        let api = |code, status| ClientError::Api {
            status,
            code,
            message: String::new(),
            request_id: None,
        };
        assert!(is_retryable(&api(keysafe_proto::ErrorCode::Sealed, 503)));
        assert!(is_retryable(&api(keysafe_proto::ErrorCode::Internal, 500)));
        assert!(!is_retryable(&api(keysafe_proto::ErrorCode::NotFound, 404)));
        assert!(!is_retryable(&api(
            keysafe_proto::ErrorCode::Forbidden,
            403
        )));
        assert!(!is_retryable(&ClientError::FingerprintMismatch {
            expected: ClientFingerprint::of_spki(b"a"),
            actual: ClientFingerprint::of_spki(b"b"),
        }));
        assert!(is_retryable(&ClientError::AllServersFailed {
            tried: vec![],
            last: Box::new(connect),
            not_retried: false,
        }));
    }
}
