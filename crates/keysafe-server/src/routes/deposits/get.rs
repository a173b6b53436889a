//! `GET /v1/deposits/{name}[?version=N][&owner=]`: the payload as stored (the client's
//! ciphertext for age deposits), with its version in `ETag` and `X-Keysafe-Version`, its encoding
//! in `X-Keysafe-Encoding` and the ACL serial in `X-Keysafe-Acl-Serial`.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, header};
use keysafe_core::Caller;
use keysafe_proto::{
    DepositName, DepositVersion, HEADER_ACL_SERIAL, HEADER_DEPOSIT_VERSION, HEADER_ENCODING,
};

pub(crate) fn version_headers(headers: &mut HeaderMap, v: DepositVersion) {
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{v}\"")) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(HEADER_DEPOSIT_VERSION, HeaderValue::from(v.get()));
}

pub async fn get(
    state: &AppState,
    caller: &Caller,
    owner: Option<&str>,
    name: DepositName,
    version: Option<DepositVersion>,
) -> Result<Response, ApiError> {
    let mut deposit = state
        .service
        .get_deposit(caller, owner, name, version)
        .await?;
    // Move the bytes out rather than copying them; the response buffer is the last copy.
    let payload = std::mem::take(&mut *deposit.payload);
    let mut response = Response::new(Body::from(payload));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    version_headers(headers, deposit.version);
    headers.insert(
        HEADER_ENCODING,
        HeaderValue::from_static(deposit.encoding.as_str()),
    );
    headers.insert(HEADER_ACL_SERIAL, HeaderValue::from(deposit.acl_serial));
    Ok(response)
}
