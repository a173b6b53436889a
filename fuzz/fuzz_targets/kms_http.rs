//! The gateway's whole HTTP surface (keysafe-kms `http`, `routes`) over the in-memory backend:
//! path segments and their percent-decoding, query strings, the `hadoop.auth` cookie, the
//! delegation-token header and parameter, pseudo authentication, `doAs`, every operation's
//! JSON body, the ACLs and the answers. Each input is a short session of requests against a
//! fresh gateway (so an input replays the same way), whose key administrator is `alice`.
//! Properties: nothing panics or hangs; a caller that is not `alice`, with no cookie and no
//! delegation token, never gets a 2xx for a KMS operation (the ACLs hold whatever the path,
//! query and body); every answer's body can be read.
#![no_main]

use arbitrary::Arbitrary;
use http_body_util::BodyExt;
use keysafe_kms::backend::MemoryBackend;
use keysafe_kms::{Gateway, KmsConfig};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use tower::ServiceExt;

const SEGMENTS: &[&str] = &[
    "keys",
    "key",
    "keyversion",
    "names",
    "metadata",
    "_metadata",
    "_currentversion",
    "_versions",
    "_eek",
    "_invalidatecache",
    "_reencryptbatch",
    "k1",
    "k1@0",
    "k1@1",
];
const PARAMS: &[&str] = &[
    "user.name",
    "op",
    "eek_op",
    "num_keys",
    "key",
    "doAs",
    "delegation",
    "token",
    "renewer",
];
const VALUES: &[&str] = &[
    "alice",
    "bob",
    "generate",
    "decrypt",
    "reencrypt",
    "GETDELEGATIONTOKEN",
    "RENEWDELEGATIONTOKEN",
    "CANCELDELEGATIONTOKEN",
    "k1",
    "3",
];
const KEYS: &[&str] = &[
    "name",
    "cipher",
    "length",
    "material",
    "description",
    "attributes",
    "iv",
    "versionName",
    "encryptedKeyVersion",
    "key.acl.name",
];

#[derive(Arbitrary, Debug)]
enum Segment {
    Known(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Path {
    Kms(Vec<Segment>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Any(String),
}

impl Text {
    fn get(&self, table: &[&str]) -> String {
        match self {
            Text::Known(i) => table[usize::from(*i) % table.len()].to_owned(),
            Text::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(Text),
    Base64(Vec<u8>),
    Array(Vec<Json>),
    Object(Vec<(Text, Json)>),
}

impl Json {
    fn value(&self, depth: usize) -> serde_json::Value {
        use serde_json::Value;
        if depth > 6 {
            return Value::Null;
        }
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Str(t) => Value::String(t.get(VALUES)),
            Json::Base64(b) => {
                use base64::Engine;
                Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            Json::Array(a) => Value::Array(a.iter().take(8).map(|j| j.value(depth + 1)).collect()),
            Json::Object(o) => Value::Object(
                o.iter()
                    .take(8)
                    .map(|(k, v)| (k.get(KEYS), v.value(depth + 1)))
                    .collect(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Body {
    None,
    Json(Json),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Cookie {
    None,
    /// The cookie the gateway set last.
    Last,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Request {
    method: u8,
    path: Path,
    query: Vec<(Text, Text)>,
    cookie: Cookie,
    delegation: Option<Text>,
    body: Body,
}

const METHODS: &[http::Method] = &[
    http::Method::GET,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::OPTIONS,
    http::Method::HEAD,
    http::Method::PATCH,
];

fn path(p: &Path) -> String {
    match p {
        Path::Raw(s) => s.clone(),
        Path::Kms(segs) => {
            let mut out = String::from("/kms/v1");
            for s in segs.iter().take(6) {
                out.push('/');
                match s {
                    Segment::Known(i) => out.push_str(SEGMENTS[usize::from(*i) % SEGMENTS.len()]),
                    Segment::Text(t) => out.extend(percent_encoding::utf8_percent_encode(
                        t,
                        percent_encoding::NON_ALPHANUMERIC,
                    )),
                }
            }
            out
        }
    }
}

fuzz_target!(|session: Vec<Request>| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let cfg = KmsConfig {
            audit_log: None,
            key_admins: "alice".to_owned(),
            ..KmsConfig::default()
        };
        let gw = Gateway::with_backend(Arc::new(MemoryBackend::default()), &cfg)
            .await
            .expect("a gateway over memory");
        let app = keysafe_kms::http::router(gw);
        let mut last_cookie: Option<String> = None;
        for r in session.iter().take(6) {
            let query: Vec<(String, String)> = r
                .query
                .iter()
                .take(8)
                .map(|(k, v)| (k.get(PARAMS), v.get(VALUES)))
                .collect();
            let qs: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&query)
                .finish();
            let uri = if qs.is_empty() {
                path(&r.path)
            } else {
                format!("{}?{qs}", path(&r.path))
            };
            let method = METHODS[usize::from(r.method) % METHODS.len()].clone();
            let mut b = http::Request::builder().method(method.clone()).uri(&uri);
            let cookie = match &r.cookie {
                Cookie::None => None,
                Cookie::Last => last_cookie.clone(),
                Cookie::Raw(s) => Some(s.clone()),
            };
            if let Some(c) = &cookie {
                b = b.header(http::header::COOKIE, format!("hadoop.auth={c}"));
            }
            let delegation = r.delegation.as_ref().map(|t| t.get(VALUES));
            if let Some(d) = &delegation {
                b = b.header("X-Hadoop-Delegation-Token", d);
            }
            let body = match &r.body {
                Body::None => Vec::new(),
                Body::Json(j) => serde_json::to_vec(&j.value(0)).expect("serialises"),
                Body::Raw(b) => b.clone(),
            };
            if !body.is_empty() {
                b = b.header(http::header::CONTENT_TYPE, "application/json");
            }
            let Ok(req) = b.body(axum::body::Body::from(body)) else {
                continue;
            };
            // What the gateway will see (a raw path may carry a query of its own).
            let seen_path = req.uri().path().to_owned();
            let seen_query: Vec<(String, String)> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let resp = app.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            for v in resp.headers().get_all(http::header::SET_COOKIE) {
                if let Some(c) = v
                    .to_str()
                    .ok()
                    .and_then(|s| s.strip_prefix("hadoop.auth=\""))
                    .and_then(|s| s.split('"').next())
                    .filter(|c| !c.is_empty())
                {
                    last_cookie = Some(c.to_owned());
                }
            }
            let _ = resp.into_body().collect().await.expect("a readable body");

            let claims_alice = seen_query
                .iter()
                .any(|(k, v)| (k == "user.name" || k.eq_ignore_ascii_case("doas")) && v == "alice");
            let with_token =
                delegation.is_some() || seen_query.iter().any(|(k, _)| k == "delegation");
            let dt_op = seen_query.iter().any(|(k, _)| k == "op");
            if seen_path.starts_with("/kms/v1")
                && cookie.is_none()
                && !with_token
                && !claims_alice
                && !dt_op
                && method != http::Method::OPTIONS
            {
                assert!(
                    !status.is_success(),
                    "{method} {uri} answered {status} to a caller without rights"
                );
            }
        }
    });
});
