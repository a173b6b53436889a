//! The `/kms/v1/` HTTP surface, as Hadoop's `KMSAuthenticationFilter` fronts `KMS.java`:
//! paths percent-decoded per segment (`+` kept literally, as Jetty does), authentication from
//! the request head alone (cookie, delegation token, then the configured scheme), the body read
//! only after authentication (bounded in size and time), then the operation (`routes`). Also
//! the unauthenticated `GET /health`, which reports cached state and never reaches keysafe.

use crate::auth::{AuthRequest, AuthStep, COOKIE_NAME, cookie_value};
use crate::certauth::PeerCertificate;
use crate::error::{KmsError, KmsResult};
use crate::gateway::Gateway;
use crate::routes::{Caller, Ctx, route};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The peer's address, put into every request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

pub fn router(gw: Arc<Gateway>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(gw)
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn empty(status: StatusCode) -> Response {
    status.into_response()
}

pub(crate) fn query_get<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// Splits `/kms/v1/...` into percent-decoded segments; None if not under `/kms/v1`.
fn segments(path: &str) -> Option<KmsResult<Vec<String>>> {
    let rest = path.strip_prefix("/kms/v1")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return Some(Ok(vec![]));
    }
    Some(
        rest.split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| KmsError::illegal("the path is not valid UTF-8"))
            })
            .collect(),
    )
}

fn set_cookie(resp: &mut Response, value: &str, secure: bool) {
    let mut c = format!("{COOKIE_NAME}=\"{value}\"; Path=/; HttpOnly");
    if secure {
        c.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn unauthorized(challenge: &'static str) -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, "Authentication required").into_response();
    // Hadoop's filter puts the message in the reason phrase; its client reports it.
    r.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            b"Authentication required",
        ));
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("hadoop.auth=; Path=/; HttpOnly"),
    );
    r
}

/// How the request authenticated.
enum Authn {
    Cookie(String),
    Token(crate::delegation::TokenUser),
    /// First contact (pseudo `user.name`, a finished SPNEGO exchange, a client certificate): a
    /// cookie is issued (user, principal), with the authenticator's response headers.
    Fresh(String, Option<String>, Vec<(http::HeaderName, HeaderValue)>),
    /// Another round of a multi-round scheme: 401 with these headers.
    Continue(Vec<(http::HeaderName, HeaderValue)>),
    None,
}

async fn authenticate(
    gw: &Gateway,
    query: &[(String, String)],
    headers: &HeaderMap,
    peer: Option<&PeerCertificate>,
) -> KmsResult<Authn> {
    let token_type = gw.authenticator.token_type();
    let cookie_user = cookie_value(headers).and_then(|c| gw.cookies.verify(&c, token_type));
    if gw.authenticator.cookie_alone_authenticates()
        && let Some(u) = cookie_user.clone()
    {
        return Ok(Authn::Cookie(u));
    }
    let dt = headers
        .get("X-Hadoop-Delegation-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_get(query, "delegation").map(str::to_owned));
    if let Some(t) = dt {
        return gw.dt.verify(&t).await.map(Authn::Token);
    }
    let req = AuthRequest {
        query,
        headers,
        peer_certificate: peer,
    };
    match gw.authenticator.authenticate(&req).await? {
        AuthStep::User {
            user,
            principal,
            headers,
        } => {
            if cookie_user.as_deref() == Some(user.as_str()) && headers.is_empty() {
                Ok(Authn::Cookie(user))
            } else {
                Ok(Authn::Fresh(user, principal, headers))
            }
        }
        AuthStep::Continue { headers } => Ok(Authn::Continue(headers)),
        AuthStep::None => Ok(Authn::None),
    }
}

/// `GET /health`: the gateway's cached view (never a keysafe request, so it cannot be used to
/// load keysafe): 200 while keysafe answered recently, 503 otherwise.
pub(crate) fn health(gw: &Gateway) -> Response {
    let h = gw.health.snapshot();
    let status = if h.keysafe_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut warnings = Vec::new();
    if !gw.acls.file_ok() {
        warnings.push(
            "the ACL file is missing or does not parse; the previous ACLs are in force".to_owned(),
        );
    }
    let days_left = gw
        .tls
        .as_ref()
        .map(|t| (t.not_after() - crate::auth::now_ms() / 1000).div_euclid(86_400));
    if let Some(d) = days_left
        && d < 30
    {
        warnings.push(format!("the TLS certificate expires in {d} days"));
    }
    json_response(
        status,
        &json!({
            "status": if h.keysafe_ok { "ok" } else { "unavailable" },
            "keysafe_reachable": h.keysafe_ok,
            "last_keysafe_contact_seconds_ago": h.last_ok_secs_ago,
            "acl_file_ok": gw.acls.file_ok(),
            "tls_certificate_days_left": days_left,
            "warnings": warnings,
        }),
    )
}

async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let started = Instant::now();
    let (label, resp) = serve_request(&gw, req).await;
    crate::metrics::record_request(&gw, label, resp.status(), started.elapsed());
    resp
}

async fn serve_request(gw: &Arc<Gateway>, req: Request) -> (&'static str, Response) {
    let remote = req
        .extensions()
        .get::<RemoteAddr>()
        .map(|r| r.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let peer = req.extensions().get::<PeerCertificate>().cloned();
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let uri = parts.uri.clone();
    let headers = parts.headers;
    if uri.path() == "/health" && method == Method::GET {
        return ("health", health(gw));
    }
    let logged_url = || crate::audit::redact_url(uri.path(), uri.query());
    let segs = match segments(uri.path()) {
        Some(Ok(s)) => s,
        Some(Err(e)) => return ("other", e.into_response()),
        None => {
            return (
                "other",
                KmsError::illegal(format!("no such resource: {}", uri.path()))
                    .with_status(StatusCode::NOT_FOUND)
                    .into_response(),
            );
        }
    };
    let label = crate::metrics::route_label(&method, &segs);
    let query: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let dt_op = query_get(&query, "op").map(str::to_uppercase).filter(|op| {
        matches!(
            op.as_str(),
            "GETDELEGATIONTOKEN" | "RENEWDELEGATIONTOKEN" | "CANCELDELEGATIONTOKEN"
        )
    });
    let label = match dt_op.as_deref() {
        Some("GETDELEGATIONTOKEN") => "get_delegation_token",
        Some("RENEWDELEGATIONTOKEN") => "renew_delegation_token",
        Some("CANCELDELEGATIONTOKEN") => "cancel_delegation_token",
        _ => label,
    };

    // CANCELDELEGATIONTOKEN needs no authentication at all (its body is never read).
    if method != Method::OPTIONS && dt_op.as_deref() == Some("CANCELDELEGATIONTOKEN") {
        let caller = match cookie_value(&headers) {
            Some(c) => gw.cookies.verify(&c, gw.authenticator.token_type()),
            None => None,
        };
        let r = match cancel_token(gw, &method, &query, caller.as_deref()).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        return (label, r);
    }

    let authn = match authenticate(gw, &query, &headers, peer.as_ref()).await {
        Ok(a) => a,
        Err(e) => {
            gw.audit.unauthenticated(
                &remote.ip().to_string(),
                method.as_str(),
                &logged_url(),
                &e.message,
            );
            return (label, e.into_response());
        }
    };
    let mut extra_headers = vec![];
    let (user, principal, fresh, by_token) = match authn {
        Authn::Cookie(u) => (u, None, false, false),
        Authn::Token(t) => (t.owner, None, false, true),
        Authn::Fresh(u, p, h) => {
            extra_headers = h;
            (u, p, true, false)
        }
        Authn::Continue(h) => {
            let mut r = (StatusCode::UNAUTHORIZED, "Authentication required").into_response();
            for (k, v) in h {
                r.headers_mut().append(k, v);
            }
            return (label, r);
        }
        Authn::None => {
            if method != Method::OPTIONS {
                gw.audit.unauthenticated(
                    &remote.ip().to_string(),
                    method.as_str(),
                    &logged_url(),
                    "Authentication required",
                );
            }
            return (label, unauthorized(gw.authenticator.challenge()));
        }
    };
    if let Err(e) = crate::auth::check_user_name(&user) {
        return (label, e.into_response());
    }
    let cookie = (fresh && !gw.never_set_cookie).then(|| {
        gw.cookies
            .issue(&user, principal.as_deref(), gw.authenticator.token_type())
    });
    let finish = |mut resp: Response, extra: Vec<(http::HeaderName, HeaderValue)>| {
        if let Some(c) = &cookie {
            set_cookie(&mut resp, c, gw.https);
        }
        for (k, v) in extra {
            resp.headers_mut().append(k, v);
        }
        resp
    };

    // doAs (parameter name matched case-insensitively, as Hadoop's getDoAs).
    let doas = query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("doas"))
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty());
    let effective = match &doas {
        // A delegation token already names its user (Hadoop ignores doAs for token requests).
        Some(d) if *d != user && !by_token => {
            if let Err(e) = crate::auth::check_user_name(d)
                .and_then(|()| gw.proxy.authorize(&user, d, remote.ip(), &gw.groups))
            {
                return (label, finish(e.into_response(), vec![]));
            }
            d.clone()
        }
        _ => user.clone(),
    };

    if method == Method::OPTIONS {
        return (label, finish(empty(StatusCode::OK), extra_headers));
    }
    if let Some(op) = dt_op {
        let r = match op.as_str() {
            "GETDELEGATIONTOKEN" => {
                get_token(gw, &method, &query, &user, &effective, by_token).await
            }
            _ => renew_token(gw, &method, &query, &user).await,
        };
        return (
            label,
            finish(r.unwrap_or_else(|e| e.into_response()), extra_headers),
        );
    }
    // Authenticated: now, and only now, the body is read (bounded in size and time).
    let body = match read_body(gw, &headers, body).await {
        Ok(b) => b,
        Err(e) => return (label, finish(e.into_response(), extra_headers)),
    };
    let ctx = Ctx {
        gw,
        caller: Caller {
            groups: gw.groups.of(&effective),
            user: effective,
        },
        method: method.clone(),
    };
    let resp = match route(&ctx, &segs, &query, &headers, &body).await {
        Ok(r) => r,
        Err(e) => {
            if !e.is_unauthorized() {
                ctx.gw
                    .audit
                    .error(&ctx.caller.user, ctx.method.as_str(), &e.message);
            }
            e.into_response()
        }
    };
    (label, finish(resp, extra_headers))
}

/// Reads the body of an authenticated request: at most `limits.max_body_bytes` (a larger
/// `Content-Length` is refused before reading), within `limits.body_timeout`.
async fn read_body(gw: &Gateway, headers: &HeaderMap, body: Body) -> KmsResult<bytes::Bytes> {
    let max = gw.limits.max_body_bytes;
    let too_large = || {
        KmsError::illegal(format!(
            "the request body is larger than {max} bytes (limits.max_body_bytes)"
        ))
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(gw.limits.body_timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(too_large())
            } else {
                Err(KmsError::illegal("the request body could not be read"))
            }
        }
        Err(_) => Err(KmsError::illegal(format!(
            "the request body did not arrive within {:?} (limits.body_timeout)",
            gw.limits.body_timeout
        ))
        .with_status(StatusCode::REQUEST_TIMEOUT)),
    }
}

fn wrong_method(method: &Method, op: &str, want: &str) -> KmsError {
    KmsError::illegal(format!(
        "Wrong HTTP method [{method}] for operation [{op}], it should be [{want}]"
    ))
}

fn token_param<'a>(query: &'a [(String, String)], op: &str) -> KmsResult<&'a str> {
    query_get(query, "token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            KmsError::illegal(format!("Operation [{op}] requires the parameter [token]"))
        })
}

async fn get_token(
    gw: &Gateway,
    method: &Method,
    query: &[(String, String)],
    user: &str,
    effective: &str,
    by_token: bool,
) -> KmsResult<Response> {
    if *method != Method::GET {
        return Err(wrong_method(method, "GETDELEGATIONTOKEN", "GET"));
    }
    if by_token {
        return Err(KmsError::authn(
            "Delegation token cannot be used to obtain a new delegation token",
        ));
    }
    let renewer = query_get(query, "renewer")
        .filter(|r| !r.is_empty())
        .unwrap_or(effective);
    let real = (effective != user).then_some(user);
    let url = gw
        .dt
        .issue(effective, &gw.groups.of(effective), renewer, real, user)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"Token": {"urlString": url}}),
    ))
}

async fn renew_token(
    gw: &Gateway,
    method: &Method,
    query: &[(String, String)],
    user: &str,
) -> KmsResult<Response> {
    if *method != Method::PUT {
        return Err(wrong_method(method, "RENEWDELEGATIONTOKEN", "PUT"));
    }
    let t = token_param(query, "RENEWDELEGATIONTOKEN")?;
    let exp = gw.dt.renew(t, user).await?;
    Ok(json_response(StatusCode::OK, &json!({"long": exp})))
}

async fn cancel_token(
    gw: &Gateway,
    method: &Method,
    query: &[(String, String)],
    caller: Option<&str>,
) -> KmsResult<Response> {
    if *method != Method::PUT {
        return Err(wrong_method(method, "CANCELDELEGATIONTOKEN", "PUT"));
    }
    let t = token_param(query, "CANCELDELEGATIONTOKEN")?;
    gw.dt.cancel(t, caller).await?;
    Ok(empty(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        let s = segments("/kms/v1/keyversion/k2%400/_eek").unwrap().unwrap();
        assert_eq!(s, vec!["keyversion", "k2@0", "_eek"]);
        let s = segments("/kms/v1/key/a%2Fb+c").unwrap().unwrap();
        assert_eq!(s, vec!["key", "a/b+c"]);
        assert_eq!(segments("/kms/v1/").unwrap().unwrap(), Vec::<String>::new());
        assert!(segments("/kms/v10/x").is_none());
        assert!(segments("/other").is_none());
        assert!(segments("/kms/v1/key/%ff").unwrap().is_err());
    }
}
