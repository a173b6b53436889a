//! `GET /v1/deposits/{name}[?version=N][&owner=]`: the payload as stored (the client's
//! ciphertext for age deposits), with its version in `X-Keysafe-Version`, its encoding in
//! `X-Keysafe-Encoding`, the ACL serial in `X-Keysafe-Acl-Serial` and a strong `ETag` that names
//! exactly these bytes and headers. `If-None-Match` with that tag (or `*`) is answered
//! `304 Not Modified` without a body and without decrypting anything, but only after every
//! check a full read makes: a caller that lost access gets `404`, never `304`.

use crate::error::ApiError;
use crate::headers::{ACL_SERIAL, DEPOSIT_VERSION, ENCODING};
use crate::state::AppState;
use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use keysafe_core::Caller;
use keysafe_core::service::{ContentTag, DepositRead, IfNoneMatch};
use keysafe_proto::api::Encoding;
use keysafe_proto::{DepositName, DepositVersion};

/// `x-keysafe-version` on put responses.
pub(crate) fn version_headers(headers: &mut HeaderMap, v: DepositVersion) {
    headers.insert(DEPOSIT_VERSION.clone(), HeaderValue::from(v.get()));
}

/// The headers a GET and its `304` share.
fn read_headers(
    headers: &mut HeaderMap,
    v: DepositVersion,
    encoding: Encoding,
    acl_serial: u64,
    etag: &ContentTag,
) {
    let mut quoted = String::with_capacity(etag.as_str().len() + 2);
    quoted.push('"');
    quoted.push_str(etag.as_str());
    quoted.push('"');
    if let Ok(etag) = HeaderValue::try_from(quoted) {
        headers.insert(header::ETAG, etag);
    }
    version_headers(headers, v);
    headers.insert(
        ENCODING.clone(),
        HeaderValue::from_static(encoding.as_str()),
    );
    headers.insert(ACL_SERIAL.clone(), HeaderValue::from(acl_serial));
}

/// `If-None-Match`, parsed; a malformed one is `400`, not ignored.
pub(crate) fn if_none_match(headers: &HeaderMap) -> Result<IfNoneMatch, ApiError> {
    let mut values = headers.get_all(header::IF_NONE_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Ok(IfNoneMatch::Absent);
    }
    let joined = values
        .map(|v| v.to_str().map_err(|_| ()))
        .collect::<Result<Vec<_>, ()>>()
        .ok()
        .map(|v| v.join(","));
    joined
        .as_deref()
        .and_then(IfNoneMatch::parse)
        .ok_or_else(|| {
            ApiError::bad_request(
                "If-None-Match must be * or a list of entity tags from this route's ETag",
            )
        })
}

/// Reads a deposit: the payload as stored, or `304` when `If-None-Match` names it.
#[utoipa::path(
    get, path = "/v1/deposits/{name}", tag = "deposits",
    params(
        super::NameParam, super::OwnerParam,
        ("version" = Option<u64>, Query, description = "A version other than the current one."),
        ("if-none-match" = Option<String>, Header, description = "`*` or entity tags from this route's ETag: answered 304 when one names what would be served."),
    ),
    responses(
        (status = 200, description = "The payload as stored (the client's ciphertext for age deposits).",
            content_type = "application/octet-stream", body = String, headers(
                ("etag" = String, description = "A strong validator of exactly these bytes and headers, \"VERSION-HASH\"."),
                ("x-keysafe-version" = u64, description = "The version served."),
                ("x-keysafe-encoding" = String, description = "`age` or `raw`."),
                ("x-keysafe-acl-serial" = u64, description = "The deposit's ACL serial."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` named what would be served.", headers(
                ("etag" = String, description = "The entity tag."),
                ("x-keysafe-version" = u64, description = "The version."),
                ("x-keysafe-encoding" = String, description = "`age` or `raw`."),
                ("x-keysafe-acl-serial" = u64, description = "The deposit's ACL serial."),
            )),
        (status = 404, description = "No such deposit or version visible to the caller."),
        (status = 409, description = "The deposit is soft-deleted."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn get(
    state: &AppState,
    caller: &Caller,
    params: &super::DepositParams,
    name: DepositName,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let known = if_none_match(headers)?;
    let version = params.version()?;
    let owner = params.owner.as_deref();
    let read = state
        .service
        .read_deposit(caller, owner, name, version, &known)
        .await?;
    match read {
        DepositRead::Full(mut deposit) => {
            // Move the bytes out rather than copying them; the response buffer is the last copy.
            let payload = std::mem::take(&mut *deposit.payload);
            let mut response = Response::new(Body::from(payload));
            let headers = response.headers_mut();
            // One allocation for every header this answer gets, here and in the middleware
            // (request id, cache control, a rotated token), instead of growing the map twice.
            headers.reserve(9);
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            read_headers(
                headers,
                deposit.version,
                deposit.encoding,
                deposit.acl_serial,
                &deposit.etag,
            );
            Ok(response)
        }
        DepositRead::NotModified {
            version,
            encoding,
            acl_serial,
            etag,
        } => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            read_headers(response.headers_mut(), version, encoding, acl_serial, &etag);
            Ok(response)
        }
    }
}
