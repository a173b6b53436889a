//! `PUT /v1/deposits/{name}`: stores the raw request body as a new version. `If-Match: "N"` makes
//! it a compare-and-set on the current version; `If-None-Match: *` creates only. Bodies past the
//! configured limit get 413 before being read whole.

pub(crate) use crate::extract::read_limited;

use super::parse_path;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::identity::Authed;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Request, State};
use http::{HeaderMap, StatusCode, header};
use keysafe_core::service::{Precondition, PutOptions};
use keysafe_proto::api::{Encoding, PutResponse};
use keysafe_proto::{DepositVersion, ErrorCode};

/// `"N"`, `W/"N"` or `N`, with N in its canonical form (digits only, no sign, no leading zero).
fn parse_etag_version(v: &str) -> Option<DepositVersion> {
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v);
    // A GET's entity tag is `VERSION-HASH`; the compare-and-set is on the version.
    let v = v.split_once('-').map_or(v, |(version, _)| version);
    DepositVersion::parse(v).ok()
}

pub(crate) fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let if_match = headers.get(header::IF_MATCH);
    let if_none = headers.get(header::IF_NONE_MATCH);
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "send either If-Match or If-None-Match, not both",
        )),
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(parse_etag_version)
            .map(Precondition::IfMatch)
            .ok_or_else(|| ApiError::bad_request("If-Match must be a version, for example \"3\"")),
        (None, Some(v)) if v.as_bytes() == b"*" => Ok(Precondition::IfAbsent),
        (None, Some(_)) => Err(ApiError::bad_request("If-None-Match accepts only *")),
        (None, None) => Ok(Precondition::None),
    }
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    match headers.get(&crate::headers::ENCODING) {
        None => Ok(Encoding::Raw),
        Some(v) => {
            v.to_str().ok().and_then(Encoding::parse).ok_or_else(|| {
                ApiError::bad_request("x-keysafe-encoding must be \"age\" or \"raw\"")
            })
        }
    }
}

fn acl_serial(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(&crate::headers::ACL_SERIAL)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("x-keysafe-acl-serial must be a number"))
        })
        .transpose()
}

/// Stores the request body as a new version of a deposit.
#[utoipa::path(
    put, path = "/v1/deposits/{name}", tag = "deposits",
    params(
        super::NameParam, super::OwnerParam,
        ("if-match" = Option<String>, Header, description = "Compare-and-set: the current version, \"N\" (or a GET's ETag)."),
        ("if-none-match" = Option<String>, Header, description = "`*`: create only."),
        ("x-keysafe-encoding" = Option<String>, Header, description = "`age` or `raw` (default)."),
        ("x-keysafe-acl-serial" = Option<u64>, Header, description = "The ACL serial the payload was encrypted for."),
    ),
    request_body(content = String, content_type = "application/octet-stream", description = "The payload, at most `limits.max_deposit_size` bytes."),
    responses(
        (status = 201, description = "The first version was stored.", body = PutResponse,
            headers(("x-keysafe-version" = u64, description = "The version stored."))),
        (status = 200, description = "A new version was stored.", body = PutResponse,
            headers(("x-keysafe-version" = u64, description = "The version stored."))),
        (status = 403, description = "A read-only grantee may not write."),
        (status = 404, description = "No such owner or deposit visible to the caller."),
        (status = 409, description = "A precondition or the ACL serial did not hold, or the deposit is soft-deleted."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn put(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(path): ApiPath<String>,
    ApiQuery(params): ApiQuery<super::DepositParams>,
    req: Request,
) -> Result<(StatusCode, HeaderMap, Json<PutResponse>), ApiError> {
    let (name, op) = parse_path(&path)?;
    if op.is_some() {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "PUT takes a plain deposit name",
        ));
    }
    params.no_version()?;
    let opts = PutOptions {
        precondition: precondition(req.headers())?,
        encoding: encoding(req.headers())?,
        acl_serial: acl_serial(req.headers())?,
    };
    let limit = state.service.limits().max_deposit_size;
    let (parts, body) = req.into_parts();
    let payload = read_limited(body, &parts.headers, limit).await?;
    let stored = state
        .service
        .put_deposit(&caller, params.owner.as_deref(), name, &payload, opts)
        .await?;
    let mut headers = HeaderMap::new();
    super::get::version_headers(&mut headers, stored.version);
    let status = if stored.version == DepositVersion::FIRST {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, headers, Json(stored)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert_eq!(parse_etag_version("\"3\"").map(|v| v.get()), Some(3));
        assert_eq!(parse_etag_version("W/\"3\"").map(|v| v.get()), Some(3));
        assert_eq!(parse_etag_version("4").map(|v| v.get()), Some(4));
        assert_eq!(
            parse_etag_version("\"5-00112233445566778899aabbccddeeff\"").map(|v| v.get()),
            Some(5)
        );
        assert_eq!(parse_etag_version("\"0\""), None);
        assert_eq!(parse_etag_version("x"), None);
        for bad in [
            "\"+1\"", "+1", "\"01\"", "\" 1\"", "\"1 \"", "\"\"", "1e0", "\"-1\"",
        ] {
            assert_eq!(parse_etag_version(bad), None, "{bad}");
        }
    }
}
