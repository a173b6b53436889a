//! Extractors whose rejections are our JSON errors rather than axum's plain text: every way a
//! request's path, query or JSON body can be refused goes through here (and so through the
//! middleware's one JSON renderer), with a stable code.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use keysafe_proto::ErrorCode;
use serde::de::DeserializeOwned;

/// The largest body a route accepts, set per route as a request extension
/// (`.layer(Extension(BodyLimit(n)))`); a route without one takes `routes::JSON_BODY_LIMIT`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body, read under the route's [`BodyLimit`] (a `Content-Length` over it is refused
/// before anything is read); a malformed one is `400 bad_request` naming the problem, an
/// oversized one `413 payload_too_large`, one that stopped arriving `408 request_timeout`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &AppState) -> Result<Self, ApiError> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(crate::routes::JSON_BODY_LIMIT, |l| l.0);
        let json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
        let (parts, body) = req.into_parts();
        // The limit first: an oversized body is refused whatever its type.
        let bytes = read_limited(body, &parts.headers, limit).await?;
        if !json {
            return Err(ApiError::bad_request(
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(v)| Self(v))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than the limit of {limit} bytes for this route"),
    )
}

/// Reads at most `limit` bytes of body: refused at once when `Content-Length` says more, cut
/// as soon as more arrives otherwise.
pub(crate) async fn read_limited(
    body: axum::body::Body,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Err(e) if keysafe_net::is_body_timeout(&*e) => Err(body_timeout()),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// The answer to a body that stopped arriving.
pub fn body_timeout() -> ApiError {
    ApiError::new(
        ErrorCode::RequestTimeout,
        "the request body stopped arriving; send it without pauses",
    )
}

/// A query string; a malformed one is `400 bad_request`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

/// Path parameters; one that does not decode (an invalid percent-escape, bytes that are not
/// UTF-8) is `400 bad_request`.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}
