//! `GET /v1/deposits/{name}[?version=N]`: the payload as raw bytes, with its version in
//! `ETag` and `X-Keysafe-Version`.

use crate::error::ApiError;
use crate::identity::Authed;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, header};
use keysafe_proto::{DepositName, DepositVersion, HEADER_DEPOSIT_VERSION};

pub(crate) fn version_headers(headers: &mut HeaderMap, v: DepositVersion) {
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{v}\"")) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(HEADER_DEPOSIT_VERSION, HeaderValue::from(v.get()));
}

fn version_param(req: &Request) -> Result<Option<DepositVersion>, ApiError> {
    let Some(q) = req.uri().query() else {
        return Ok(None);
    };
    let mut version = None;
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("version", v)) => {
                version = Some(
                    DepositVersion::parse(v)
                        .map_err(|e| ApiError::bad_request(e.message().to_owned()))?,
                );
            }
            _ => {
                return Err(ApiError::bad_request(
                    "unknown query parameter; GET on a deposit takes only ?version=N",
                ));
            }
        }
    }
    Ok(version)
}

pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    name: DepositName,
    req: Request,
) -> Result<Response, ApiError> {
    let version = version_param(&req)?;
    let mut deposit = state.service.get_deposit(&caller, name, version).await?;
    // Move the bytes out rather than copying them; the response buffer is the last copy.
    let payload = std::mem::take(&mut *deposit.payload);
    let mut response = Response::new(Body::from(payload));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    version_headers(headers, deposit.version);
    Ok(response)
}
