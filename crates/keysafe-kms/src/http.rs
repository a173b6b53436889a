//! The `/kms/v1/` HTTP surface: authentication filter, routing (paths are percent-decoded per
//! segment, `+` kept literally as Jetty does), ACL checks in Hadoop's order, JSON shapes and
//! status codes exactly as `KMS.java` answers, and the audit log.

use crate::acl::{KeyOp, OpType};
use crate::auth::{AuthStep, COOKIE_NAME, cookie_value};
use crate::backend::{KeyVersionRecord, split_version_name};
use crate::crypto::{b64_in, b64_out};
use crate::error::{KmsError, KmsResult};
use crate::gateway::Gateway;
use crate::kms::{CreateRequest, Eek, Kms, Metadata};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The peer's address, put into every request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

const MAX_BODY: usize = 16 * 1024 * 1024;

pub fn router(gw: Arc<Gateway>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(gw)
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn empty(status: StatusCode) -> Response {
    status.into_response()
}

fn kv_json(rec: &KeyVersionRecord, with_material: bool) -> Value {
    json!({
        "name": rec.name,
        "versionName": rec.version_name(),
        "material": if with_material { Value::String(b64_out(&rec.material)) } else { Value::Null },
    })
}

fn meta_json(name: &str, m: &Metadata) -> Value {
    json!({
        "name": name,
        "cipher": m.meta.cipher,
        "length": m.meta.length,
        "description": m.meta.description,
        "attributes": m.meta.attributes,
        "created": m.meta.created,
        "versions": m.versions,
    })
}

fn eek_json(e: &Eek) -> Value {
    json!({
        "versionName": e.version_name,
        "iv": b64_out(&e.iv),
        "encryptedKeyVersion": {
            "name": e.key_name,
            "versionName": "EEK",
            "material": b64_out(&e.material),
        },
    })
}

/// Who the request runs as.
struct Caller {
    /// The effective user (the `doAs` user when impersonating).
    user: String,
    groups: Vec<String>,
}

struct Ctx<'a> {
    gw: &'a Gateway,
    caller: Caller,
    method: Method,
}

impl Ctx<'_> {
    fn allowed(&self, op: OpType) -> bool {
        self.gw
            .acls
            .get()
            .has_access(op, &self.caller.user, &self.caller.groups)
    }

    /// `KMS.assertAccess`: the operation ACL and blacklist.
    fn assert_access(&self, op: OpType, kms_op: &str, key: Option<&str>) -> KmsResult<()> {
        if self.allowed(op) {
            return Ok(());
        }
        self.gw.audit.unauthorized(kms_op, key, &self.caller.user);
        Err(KmsError::authz(match key {
            Some(k) => format!(
                "User:{} not allowed to do '{kms_op}' on '{k}'",
                self.caller.user
            ),
            None => format!("User:{} not allowed to do '{kms_op}'", self.caller.user),
        }))
    }

    /// `KeyAuthorizationKeyProvider.doAccessCheck`: skipped for missing keys.
    async fn assert_key(&self, name: &str, op: KeyOp, kms_op: &str) -> KmsResult<()> {
        if !self.gw.key_authorization {
            return Ok(());
        }
        let Some(m) = self.gw.kms.metadata(name).await? else {
            return Ok(());
        };
        let acl_name = m
            .meta
            .attributes
            .get("key.acl.name")
            .cloned()
            .unwrap_or_else(|| name.to_owned());
        if self
            .gw
            .acls
            .get()
            .key_allowed(&acl_name, &self.caller.user, &self.caller.groups, op)
        {
            return Ok(());
        }
        self.gw
            .audit
            .unauthorized(kms_op, Some(name), &self.caller.user);
        Err(KmsError::authz(format!(
            "User [{}] is not authorized to perform [{}] on key with ACL name [{acl_name}]!!",
            self.caller.user,
            op.as_str()
        )))
    }

    fn ok(&self, op: &str, key: Option<&str>, extra: &str) {
        self.gw.audit.ok(op, key, &self.caller.user, extra);
    }
}

fn query_get<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn parse_body(body: &[u8]) -> KmsResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| KmsError::illegal(format!("the request body is not valid JSON: {e}")))
}

fn str_field<'a>(v: &'a Value, k: &str) -> KmsResult<Option<&'a str>> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KmsError::illegal(format!(
            "Parameter '{k}' must be a string"
        ))),
    }
}

fn required<'a>(v: &'a Value, k: &str) -> KmsResult<&'a str> {
    match str_field(v, k)? {
        None => Err(KmsError::illegal(format!("Parameter '{k}' cannot be null"))),
        Some("") => Err(KmsError::illegal(format!(
            "Parameter '{k}' cannot be empty"
        ))),
        Some(s) => Ok(s),
    }
}

fn b64_field(v: &Value, k: &str) -> KmsResult<zeroize::Zeroizing<Vec<u8>>> {
    b64_in(required(v, k)?).map_err(|e| KmsError::illegal(format!("Parameter '{k}': {e}")))
}

fn material_field(v: &Value) -> KmsResult<Option<zeroize::Zeroizing<Vec<u8>>>> {
    match str_field(v, "material")? {
        None => Ok(None),
        Some(s) => b64_in(s)
            .map(Some)
            .map_err(|e| KmsError::illegal(format!("Parameter 'material': {e}"))),
    }
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
    Token(crate::auth::TokenUser),
    /// First contact (pseudo `user.name`, or a finished SPNEGO exchange): a cookie is issued,
    /// with the authenticator's response headers.
    Fresh(String, Vec<(http::HeaderName, HeaderValue)>),
    /// Another round of a multi-round scheme: 401 with these headers.
    Continue(Vec<(http::HeaderName, HeaderValue)>),
    None,
}

async fn authenticate(
    gw: &Gateway,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> KmsResult<Authn> {
    if let Some(c) = cookie_value(headers)
        && let Some(u) = gw.cookies.verify(&c, gw.authenticator.token_type())
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
    match gw.authenticator.authenticate(query, headers)? {
        AuthStep::User { user, headers } => Ok(Authn::Fresh(user, headers)),
        AuthStep::Continue { headers } => Ok(Authn::Continue(headers)),
        AuthStep::None => Ok(Authn::None),
    }
}

async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let remote = req
        .extensions()
        .get::<RemoteAddr>()
        .map(|r| r.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let uri = parts.uri.clone();
    let headers = parts.headers;
    let segs = match segments(uri.path()) {
        Some(Ok(s)) => s,
        Some(Err(e)) => return e.into_response(),
        None => {
            return KmsError::illegal(format!("no such resource: {}", uri.path()))
                .with_status(StatusCode::NOT_FOUND)
                .into_response();
        }
    };
    let query: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let body = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return KmsError::illegal("the request body is too large or unreadable")
                .into_response();
        }
    };
    let dt_op = query_get(&query, "op").map(str::to_uppercase).filter(|op| {
        matches!(
            op.as_str(),
            "GETDELEGATIONTOKEN" | "RENEWDELEGATIONTOKEN" | "CANCELDELEGATIONTOKEN"
        )
    });

    // CANCELDELEGATIONTOKEN needs no authentication at all.
    if method != Method::OPTIONS && dt_op.as_deref() == Some("CANCELDELEGATIONTOKEN") {
        let caller = match cookie_value(&headers) {
            Some(c) => gw.cookies.verify(&c, gw.authenticator.token_type()),
            None => None,
        };
        return match cancel_token(&gw, &method, &query, caller.as_deref()).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }

    let authn = match authenticate(&gw, &query, &headers).await {
        Ok(a) => a,
        Err(e) => {
            gw.audit.unauthenticated(
                &remote.ip().to_string(),
                method.as_str(),
                &uri.to_string(),
                &e.message,
            );
            return e.into_response();
        }
    };
    let mut extra_headers = vec![];
    let (user, fresh, by_token) = match authn {
        Authn::Cookie(u) => (u, false, false),
        Authn::Token(t) => (t.owner, false, true),
        Authn::Fresh(u, h) => {
            extra_headers = h;
            (u, true, false)
        }
        Authn::Continue(h) => {
            let mut r = (StatusCode::UNAUTHORIZED, "Authentication required").into_response();
            for (k, v) in h {
                r.headers_mut().append(k, v);
            }
            return r;
        }
        Authn::None => {
            if method != Method::OPTIONS {
                gw.audit.unauthenticated(
                    &remote.ip().to_string(),
                    method.as_str(),
                    &uri.to_string(),
                    "Authentication required",
                );
            }
            return unauthorized(gw.authenticator.challenge());
        }
    };
    if let Err(e) = crate::auth::check_user_name(&user) {
        return e.into_response();
    }
    let cookie = (fresh && !gw.never_set_cookie)
        .then(|| gw.cookies.issue(&user, gw.authenticator.token_type()));

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
                let mut r = e.into_response();
                if let Some(c) = &cookie {
                    set_cookie(&mut r, c, gw.https);
                }
                return r;
            }
            d.clone()
        }
        _ => user.clone(),
    };

    let mut resp = if method == Method::OPTIONS {
        empty(StatusCode::OK)
    } else if let Some(op) = dt_op {
        let r = match op.as_str() {
            "GETDELEGATIONTOKEN" => {
                get_token(&gw, &method, &query, &user, &effective, by_token).await
            }
            _ => renew_token(&gw, &method, &query, &user).await,
        };
        r.unwrap_or_else(|e| e.into_response())
    } else {
        let ctx = Ctx {
            gw: &gw,
            caller: Caller {
                groups: gw.groups.of(&effective),
                user: effective,
            },
            method: method.clone(),
        };
        match route(&ctx, &segs, &query, &headers, &body).await {
            Ok(r) => r,
            Err(e) => {
                if !e.is_unauthorized() {
                    ctx.gw
                        .audit
                        .error(&ctx.caller.user, ctx.method.as_str(), &e.message);
                }
                e.into_response()
            }
        }
    };
    if let Some(c) = &cookie {
        set_cookie(&mut resp, c, gw.https);
    }
    for (k, v) in extra_headers {
        resp.headers_mut().append(k, v);
    }
    resp
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
    let url = gw.dt.issue(effective, renewer, real).await?;
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

fn not_found(method: &Method, segs: &[String]) -> KmsError {
    KmsError::illegal(format!(
        "no such KMS operation: {method} /kms/v1/{}",
        segs.join("/")
    ))
    .with_status(StatusCode::NOT_FOUND)
}

async fn route(
    ctx: &Ctx<'_>,
    segs: &[String],
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> KmsResult<Response> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = &ctx.method;
    match (m.clone(), s.as_slice()) {
        (Method::POST, ["keys"]) => create_key(ctx, headers, body).await,
        (Method::GET, ["keys", "names"]) => {
            ctx.assert_access(OpType::GetKeys, "GET_KEYS", None)?;
            let names = ctx.gw.kms.names().await?;
            ctx.ok("GET_KEYS", None, "");
            Ok(json_response(StatusCode::OK, &json!(names)))
        }
        (Method::GET, ["keys", "metadata"]) => {
            let names: Vec<&str> = query
                .iter()
                .filter(|(k, _)| k == "key")
                .map(|(_, v)| v.as_str())
                .collect();
            ctx.assert_access(OpType::GetMetadata, "GET_KEYS_METADATA", None)?;
            let mut out = Vec::with_capacity(names.len());
            for n in &names {
                ctx.assert_key(n, KeyOp::Read, "GET_KEYS_METADATA").await?;
                out.push(match ctx.gw.kms.metadata(n).await? {
                    Some(md) => meta_json(n, &md),
                    None => json!({}),
                });
            }
            ctx.ok("GET_KEYS_METADATA", None, &format!("{names:?}"));
            Ok(json_response(StatusCode::OK, &Value::Array(out)))
        }
        (Method::DELETE, ["key", name]) => {
            ctx.assert_access(OpType::Delete, "DELETE_KEY", Some(name))?;
            ctx.assert_key(name, KeyOp::Management, "DELETE_KEY")
                .await?;
            ctx.gw.kms.delete(name).await?;
            ctx.ok("DELETE_KEY", Some(name), "");
            Ok(empty(StatusCode::OK))
        }
        (Method::POST, ["key", name]) => {
            let v = if body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                parse_body(body)?
            };
            let material = material_field(&v)?;
            ctx.assert_access(OpType::Rollover, "ROLL_NEW_VERSION", Some(name))?;
            if material.is_some() {
                ctx.assert_access(OpType::SetKeyMaterial, "ROLL_NEW_VERSION", Some(name))?;
            }
            ctx.assert_key(name, KeyOp::Management, "ROLL_NEW_VERSION")
                .await?;
            let user_material = material.is_some();
            let rec = ctx.gw.kms.roll(name, material).await?;
            ctx.ok(
                "ROLL_NEW_VERSION",
                Some(name),
                &format!(
                    "UserProvidedMaterial:{user_material} NewVersion:{}",
                    rec.version_name()
                ),
            );
            Ok(json_response(
                StatusCode::OK,
                &kv_json(&rec, ctx.allowed(OpType::Get)),
            ))
        }
        (Method::POST, ["key", name, "_invalidatecache"]) => {
            ctx.assert_access(OpType::Rollover, "INVALIDATE_CACHE", Some(name))?;
            ctx.assert_key(name, KeyOp::Management, "INVALIDATE_CACHE")
                .await?;
            ctx.gw.kms.invalidate(name);
            ctx.ok("INVALIDATE_CACHE", Some(name), "");
            Ok(empty(StatusCode::OK))
        }
        (Method::GET, ["key", name]) | (Method::GET, ["key", name, "_metadata"]) => {
            ctx.assert_access(OpType::GetMetadata, "GET_METADATA", Some(name))?;
            ctx.assert_key(name, KeyOp::Read, "GET_METADATA").await?;
            let md = ctx.gw.kms.metadata(name).await?;
            ctx.ok("GET_METADATA", Some(name), "");
            Ok(json_response(
                StatusCode::OK,
                &md.map_or(json!({}), |md| meta_json(name, &md)),
            ))
        }
        (Method::GET, ["key", name, "_currentversion"]) => {
            ctx.assert_access(OpType::Get, "GET_CURRENT_KEY", Some(name))?;
            ctx.assert_key(name, KeyOp::Read, "GET_CURRENT_KEY").await?;
            let kv = ctx.gw.kms.current(name).await?;
            ctx.ok("GET_CURRENT_KEY", Some(name), "");
            Ok(json_response(
                StatusCode::OK,
                &kv.map_or(json!({}), |kv| kv_json(&kv, true)),
            ))
        }
        (Method::GET, ["key", name, "_versions"]) => {
            ctx.assert_access(OpType::Get, "GET_KEY_VERSIONS", Some(name))?;
            ctx.assert_key(name, KeyOp::Read, "GET_KEY_VERSIONS")
                .await?;
            let vs = ctx.gw.kms.versions(name).await?;
            ctx.ok("GET_KEY_VERSIONS", Some(name), "");
            Ok(json_response(
                StatusCode::OK,
                &Value::Array(vs.iter().map(|v| kv_json(v, true)).collect()),
            ))
        }
        (Method::GET, ["key", name, "_eek"]) => {
            match query_get(query, "eek_op") {
                None => return Err(KmsError::illegal("Parameter 'eekOp' cannot be null")),
                Some("generate") => {}
                Some(_) => {
                    return Err(KmsError::illegal(
                        "IllegalArgumentException Wrong eek_op value, it must be generate or decrypt",
                    ));
                }
            }
            let num = match query_get(query, "num_keys") {
                None => 1,
                Some(n) => n
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=crate::MAX_NUM_KEYS).contains(n))
                    .ok_or_else(|| {
                        KmsError::illegal(format!(
                            "Parameter 'num_keys' must be a number from 1 to {}",
                            crate::MAX_NUM_KEYS
                        ))
                    })?,
            };
            ctx.assert_access(OpType::GenerateEek, "GENERATE_EEK", Some(name))?;
            ctx.assert_key(name, KeyOp::GenerateEek, "GENERATE_EEK")
                .await?;
            let eeks = ctx.gw.kms.generate_eeks(name, num).await?;
            ctx.ok("GENERATE_EEK", Some(name), "");
            Ok(json_response(
                StatusCode::OK,
                &Value::Array(eeks.iter().map(eek_json).collect()),
            ))
        }
        (Method::POST, ["key", name, "_reencryptbatch"]) => reencrypt_batch(ctx, name, body).await,
        (Method::GET, ["keyversion", vn]) => {
            ctx.assert_access(OpType::Get, "GET_KEY_VERSION", None)?;
            let kv = ctx.gw.kms.key_version(vn).await?;
            if let Some(kv) = &kv {
                ctx.assert_key(&kv.name, KeyOp::Read, "GET_KEY_VERSION")
                    .await?;
            }
            let key = split_version_name(vn).map(|(n, _)| n);
            ctx.ok("GET_KEY_VERSION", key, "");
            Ok(json_response(
                StatusCode::OK,
                &kv.map_or(json!({}), |kv| kv_json(&kv, true)),
            ))
        }
        (Method::POST, ["keyversion", vn, "_eek"]) => eek_op(ctx, vn, query, body).await,
        _ => Err(not_found(m, segs)),
    }
}

async fn create_key(ctx: &Ctx<'_>, headers: &HeaderMap, body: &[u8]) -> KmsResult<Response> {
    let v = parse_body(body)?;
    let name = required(&v, "name")?.to_owned();
    let material = material_field(&v)?;
    ctx.assert_access(OpType::Create, "CREATE_KEY", Some(&name))?;
    if material.is_some() {
        ctx.assert_access(OpType::SetKeyMaterial, "CREATE_KEY", Some(&name))?;
    }
    let length = match v.get("length") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n <= i32::MAX as u32)
                .ok_or_else(|| KmsError::illegal("Parameter 'length' must be a positive int"))?,
        ),
        Some(_) => return Err(KmsError::illegal("Parameter 'length' must be an int")),
    };
    let mut attributes: BTreeMap<String, String> = match v.get("attributes") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(a) => serde_json::from_value(a.clone()).map_err(|_| {
            KmsError::illegal("Parameter 'attributes' must be a map of strings to strings")
        })?,
    };
    if ctx.gw.key_authorization {
        let acls = ctx.gw.acls.get();
        let (u, g) = (&ctx.caller.user, &ctx.caller.groups);
        let ok = match attributes.get("key.acl.name").filter(|a| !a.is_empty()) {
            Some(acl) => acls.key_allowed(acl, u, g, KeyOp::Management),
            None if acls.is_acl_present(&name, KeyOp::Management) => {
                attributes.insert("key.acl.name".into(), name.clone());
                acls.key_allowed(&name, u, g, KeyOp::Management)
            }
            None => false,
        };
        if !ok {
            ctx.gw.audit.unauthorized("CREATE_KEY", Some(&name), u);
            return Err(KmsError::authz(format!(
                "User [{u}] is not authorized to create key !!"
            )));
        }
    }
    let description = str_field(&v, "description")?.map(str::to_owned);
    let user_material = material.is_some();
    let rec = ctx
        .gw
        .kms
        .create(CreateRequest {
            name: name.clone(),
            cipher: str_field(&v, "cipher")?.map(str::to_owned),
            length,
            material,
            description: description.clone(),
            attributes,
        })
        .await?;
    ctx.ok(
        "CREATE_KEY",
        Some(&name),
        &format!(
            "UserProvidedMaterial:{user_material} Description:{}",
            description.as_deref().unwrap_or("null")
        ),
    );
    let mut r = json_response(
        StatusCode::CREATED,
        &kv_json(&rec, ctx.allowed(OpType::Get)),
    );
    let scheme = if ctx.gw.https { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let enc: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
    if let Ok(loc) = HeaderValue::from_str(&format!("{scheme}://{host}/kms/v1/key/{enc}")) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

async fn eek_op(
    ctx: &Ctx<'_>,
    vn: &str,
    query: &[(String, String)],
    body: &[u8],
) -> KmsResult<Response> {
    let op = match query_get(query, "eek_op") {
        None => return Err(KmsError::illegal("Parameter 'eekOp' cannot be null")),
        Some(op @ ("decrypt" | "reencrypt")) => op,
        Some(_) => {
            return Err(KmsError::illegal(
                "IllegalArgumentException Wrong eek_op value, it must be generate or decrypt",
            ));
        }
    };
    let v = parse_body(body)?;
    let name = required(&v, "name")?;
    let iv = b64_field(&v, "iv")?;
    let material = b64_field(&v, "material")?;
    if op == "decrypt" {
        ctx.assert_access(OpType::DecryptEek, "DECRYPT_EEK", Some(name))?;
        let kv = ctx.gw.kms.version_of_key(vn, name).await?;
        ctx.assert_key(name, KeyOp::DecryptEek, "DECRYPT_EEK")
            .await?;
        let dek = Kms::decrypt(&kv, &iv, &material)?;
        ctx.ok("DECRYPT_EEK", Some(name), "");
        Ok(json_response(
            StatusCode::OK,
            &json!({"name": name, "versionName": "EK", "material": b64_out(&dek)}),
        ))
    } else {
        ctx.assert_access(OpType::GenerateEek, "REENCRYPT_EEK", Some(name))?;
        let kv = ctx.gw.kms.version_of_key(vn, name).await?;
        ctx.assert_key(name, KeyOp::GenerateEek, "REENCRYPT_EEK")
            .await?;
        let e = ctx.gw.kms.reencrypt(&kv, &iv, &material).await?;
        ctx.ok("REENCRYPT_EEK", Some(name), "");
        Ok(json_response(StatusCode::OK, &eek_json(&e)))
    }
}

async fn reencrypt_batch(ctx: &Ctx<'_>, name: &str, body: &[u8]) -> KmsResult<Response> {
    let v = parse_body(body)?;
    let Value::Array(items) = v else {
        return Err(KmsError::illegal("the request body must be a JSON array"));
    };
    ctx.assert_access(OpType::GenerateEek, "REENCRYPT_EEK_BATCH", Some(name))?;
    if items.len() > 10_000 {
        tracing::warn!(key = %name, n = items.len(), "re-encrypt batch larger than Hadoop's 10000");
    }
    let mut parsed = Vec::with_capacity(items.len());
    for it in &items {
        let vn = required(it, "versionName")?;
        if split_version_name(vn).map(|(n, _)| n) != Some(name) {
            return Err(KmsError::illegal(
                "All EncryptedKeys must be under the given key name ".to_owned() + name,
            ));
        }
        let iv = b64_field(it, "iv")?;
        let inner = it
            .get("encryptedKeyVersion")
            .ok_or_else(|| KmsError::illegal("Parameter 'encryptedKeyVersion' cannot be null"))?;
        let material = b64_field(inner, "material")?;
        parsed.push((vn, iv, material));
    }
    ctx.assert_key(name, KeyOp::GenerateEek, "REENCRYPT_EEK_BATCH")
        .await?;
    let mut out = Vec::with_capacity(parsed.len());
    for (vn, iv, material) in parsed {
        let kv = ctx.gw.kms.version_of_key(vn, name).await?;
        out.push(eek_json(&ctx.gw.kms.reencrypt(&kv, &iv, &material).await?));
    }
    ctx.ok(
        "REENCRYPT_EEK_BATCH",
        Some(name),
        &format!("reencrypted {} keys", out.len()),
    );
    Ok(json_response(StatusCode::OK, &Value::Array(out)))
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
