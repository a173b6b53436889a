//! The server's HTTP API as a peer sees it (keysafe-server `routes`, behind the TLS layer):
//! the real router, middleware, extractors, handlers, domain service and SQLite store of a
//! freshly initialised data directory (on tmpfs), driven in-process with the identity the TLS
//! layer would attach. Covers path percent-decoding and dispatch (`{name}:op`), query strings,
//! conditional and encoding headers, sequenced tokens, and every JSON body with the checks the
//! service makes on it.
//!
//! Callers: nobody (no certificate), an unregistered certificate, a client of `acme`, and an
//! administrator; the harness presents each one's current sequenced token unless the input
//! says otherwise, and after each input puts both identities back in order (the store keeps
//! what the requests did, so later inputs see deposits, groups and grants earlier ones made).
//! Properties: nothing panics; no answer is a 500; every refusal is a JSON error body with a
//! stable code; callers without an identity reach only the public routes; an ordinary client
//! never gets a 2xx from an administrator route.
#![no_main]

use arbitrary::Arbitrary;
use http_body_util::BodyExt;
use keysafe_core::Caller;
use keysafe_core::service::ClientAction;
use keysafe_proto::api::{ClientRole, ClientState, OrgCreateRequest, RegisterRequest};
use keysafe_proto::{ClientFingerprint, ErrorBody, HEADER_TOKEN, OrgName};
use keysafe_server::identity::PeerIdentity;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use tower::ServiceExt;

const ROUTES: &[&str] = &[
    "/",
    "/v1/health",
    "/v1/whoami",
    "/v1/register",
    "/v1/deposits",
    "/v1/deposits/{name}",
    "/v1/deposits/{name}:versions",
    "/v1/deposits/{name}:acl",
    "/v1/deposits/{name}:undelete",
    "/v1/deposits/{name}:purge",
    "/v1/deposits/{name}:share",
    "/v1/shared",
    "/v1/recipients",
    "/v1/groups",
    "/v1/groups/{name}",
    "/v1/groups/{name}/keys",
    "/v1/groups/{name}/admit",
    "/v1/admin/orgs",
    "/v1/admin/orgs/{name}/auth",
    "/v1/admin/orgs/{name}/tokens",
    "/v1/admin/clients",
    "/v1/admin/clients/disable-unactivated",
    "/v1/admin/clients/{fp}/{name}",
    "/v1/admin/groups",
    "/v1/admin/groups/{name}/{name}",
    "/v1/admin/groups/{name}/{name}/add-member",
    "/v1/admin/groups/{name}/{name}/remove-member",
    "/v1/admin/keyring",
    "/v1/admin/keyring/retire",
    "/v1/audit/public-key",
    "/v1/admin/audit/entries",
    "/v1/admin/audit/checkpoints",
    "/v1/admin/audit/checkpoint",
];
/// Routes anyone may use without a registered identity.
const PUBLIC: &[&str] = &["/", "/v1/health", "/v1/audit/public-key", "/v1/register"];
const NAMES: &[&str] = &[
    "acme",
    "db/key",
    "kms",
    "a",
    "group:kms",
    "approve",
    "disable",
    "enable",
    "reset-token",
    "1",
    "%2e%2e",
    "%ff",
];
const PARAMS: &[&str] = &[
    "owner",
    "version",
    "prefix",
    "limit",
    "page_token",
    "deleted",
    "principal",
    "org",
    "state",
    "from",
    "a",
];
const HEADERS: &[&str] = &[
    "if-match",
    "if-none-match",
    "x-keysafe-encoding",
    "x-keysafe-acl-serial",
    "content-type",
    "x-request-id",
    "content-length",
];
const KEYS: &[&str] = &[
    "org",
    "name",
    "auth_secret",
    "recipient",
    "contacts",
    "mode",
    "secret",
    "change",
    "op",
    "grantee",
    "access",
    "expected_version",
    "expected_acl_serial",
    "versions",
    "version",
    "payload",
    "members",
    "fingerprint",
    "wrapped",
    "member",
    "keys",
    "epoch",
    "expected_epoch",
    "ttl_seconds",
    "older_than_seconds",
    "recipients",
    "include_root_key",
];
const RECIPIENT: &str = "age1h2dhxz8hztqv5w7dml00kf0t46hfzxrd3tuy697w6e4mrngngskq3g68x0";

#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Fingerprint(u8),
    Recipient,
    Any(String),
}

impl Text {
    fn get(&self, table: &[&str]) -> String {
        match self {
            Text::Known(i) => table[usize::from(*i) % table.len()].to_owned(),
            Text::Fingerprint(i) => fingerprint(*i).as_str().to_owned(),
            Text::Recipient => RECIPIENT.to_owned(),
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
            Json::Str(t) => Value::String(t.get(NAMES)),
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
enum Path {
    Route {
        route: u8,
        names: Vec<Text>,
        encode: bool,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Body {
    None,
    Json(Json),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Token {
    Held,
    None,
    Any(String),
}

#[derive(Arbitrary, Debug)]
struct Request {
    /// 0: no certificate, 1: an unregistered one, 2: the `acme` client, 3: the administrator.
    who: u8,
    token: Token,
    method: u8,
    path: Path,
    query: Vec<(Text, Text)>,
    headers: Vec<(u8, String)>,
    body: Body,
}

const METHODS: &[http::Method] = &[
    http::Method::GET,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::HEAD,
    http::Method::PATCH,
];

fn fingerprint(i: u8) -> ClientFingerprint {
    let fp = match i % 3 {
        0 => "ad".repeat(32),
        1 => "c1".repeat(32),
        _ => "0e".repeat(32),
    };
    ClientFingerprint::parse(&fp).expect("a fingerprint")
}

struct Fixture {
    router: keysafe_server::RouterService,
    service: Arc<keysafe_core::Service>,
    admin: Caller,
    tokens: Mutex<HashMap<ClientFingerprint, String>>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| keysafe_fuzz::runtime().block_on(setup()))
}

async fn setup() -> Fixture {
    let dir = keysafe_fuzz::scratch_dir();
    let data = dir.path().join("data");
    let opts = keysafe_server::init::InitOptions {
        data_dir: data.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        hostname: "localhost".into(),
        seal: Default::default(),
        storage: Default::default(),
        passphrase: None,
        join: false,
    };
    let admin_fp = fingerprint(0);
    let mut tokens = HashMap::new();
    {
        let (_, service) = keysafe_server::init::init_server(&opts)
            .await
            .expect("an initialised data directory");
        let (_, t) = service
            .bootstrap_admin(
                &admin_fp,
                b"admin certificate",
                keysafe_proto::ClientName::parse("admin").expect("a name"),
                Some(RECIPIENT.into()),
            )
            .await
            .expect("the first administrator");
        tokens.insert(admin_fp.clone(), t.0);
    }
    let config = keysafe_server::config::Config::load(&data).expect("the written configuration");
    let app = keysafe_server::open_app(&config).await.expect("the app");
    let service = app.state.service.clone();
    let admin = Caller {
        fingerprint: admin_fp,
        org: OrgName::parse(keysafe_core::service::ADMIN_ORG).expect("the admin org"),
        role: ClientRole::Admin,
    };
    let acme = OrgName::parse("acme").expect("a name");
    service
        .create_org(
            &admin,
            OrgCreateRequest {
                name: acme.clone(),
                contacts: vec![],
            },
        )
        .await
        .expect("an organisation");
    let reg = service
        .mint_registration_token(&admin, &acme, None)
        .await
        .expect("a registration token");
    let client_fp = fingerprint(1);
    let (_, t) = service
        .register(
            Some(&client_fp),
            Some(b"client certificate"),
            RegisterRequest {
                org: acme,
                auth_secret: Some(reg.token),
                name: None,
                recipient: Some(RECIPIENT.into()),
            },
        )
        .await
        .expect("a registration");
    tokens.insert(client_fp, t.0);
    Fixture {
        router: keysafe_server::router(app.state.clone()),
        service,
        admin,
        tokens: Mutex::new(tokens),
        _dir: dir,
    }
}

fn path(p: &Path) -> (String, String) {
    match p {
        Path::Raw(s) => (s.clone(), String::new()),
        Path::Route {
            route,
            names,
            encode,
        } => {
            let template = ROUTES[usize::from(*route) % ROUTES.len()];
            let mut names = names.iter();
            let mut out = String::new();
            let mut rest = template;
            while let Some(i) = rest.find('{') {
                out.push_str(&rest[..i]);
                let end = rest[i..].find('}').map_or(rest.len(), |e| i + e + 1);
                let value = names
                    .next()
                    .map_or_else(|| "x".to_owned(), |n| n.get(NAMES));
                if *encode {
                    out.extend(percent_encoding::utf8_percent_encode(
                        &value,
                        percent_encoding::NON_ALPHANUMERIC,
                    ));
                } else {
                    out.push_str(&value);
                }
                rest = &rest[end..];
            }
            out.push_str(rest);
            (out, template.to_owned())
        }
    }
}

/// Puts both identities back in order: active, their own role, a usable token.
async fn restore(f: &Fixture) {
    for (fp, role) in [
        (fingerprint(0), ClientRole::Admin),
        (fingerprint(1), ClientRole::Client),
    ] {
        let Ok(Some(rec)) = f.service.store().get_client(&fp).await else {
            continue;
        };
        let mut actions = Vec::new();
        match rec.state {
            ClientState::Active => {}
            ClientState::SuspectedClone => actions.push(ClientAction::ResetToken),
            ClientState::Disabled => actions.push(ClientAction::Enable),
            ClientState::Pending => actions.push(ClientAction::Approve),
        }
        if rec.role != role {
            actions.push(match role {
                ClientRole::Admin => ClientAction::Promote,
                ClientRole::Client => ClientAction::Demote,
            });
        }
        for a in actions {
            let _ = f.service.client_action(&f.admin, &fp, a).await;
        }
        // A token the harness does not hold (a fuzzed one after a reset) is replaced.
        let held = f.tokens.lock().expect("not poisoned").get(&fp).cloned();
        if f.service
            .authenticate(Some(&fp), held.as_deref())
            .await
            .is_err()
        {
            let _ = f
                .service
                .client_action(&f.admin, &fp, ClientAction::ResetToken)
                .await;
            if let Ok(a) = f.service.authenticate(Some(&fp), held.as_deref()).await
                && let Some(t) = a.issued_token
            {
                f.tokens
                    .lock()
                    .expect("not poisoned")
                    .insert(fp.clone(), t.0);
            }
        }
    }
}

fuzz_target!(|session: Vec<Request>| {
    let f = fixture();
    keysafe_fuzz::runtime().block_on(async {
        for r in session.iter().take(6) {
            let (uri, _template) = path(&r.path);
            let query: Vec<(String, String)> = r
                .query
                .iter()
                .take(6)
                .map(|(k, v)| (k.get(PARAMS), v.get(NAMES)))
                .collect();
            let uri = if query.is_empty() {
                uri
            } else {
                let qs: String = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&query)
                    .finish();
                format!("{uri}?{qs}")
            };
            let method = METHODS[usize::from(r.method) % METHODS.len()].clone();
            let who = r.who % 4;
            let fp = match who {
                0 => None,
                1 => Some(fingerprint(2)),
                2 => Some(fingerprint(1)),
                _ => Some(fingerprint(0)),
            };
            let mut b = http::Request::builder().method(method.clone()).uri(&uri);
            let token = match &r.token {
                Token::Held => fp
                    .as_ref()
                    .and_then(|fp| f.tokens.lock().expect("not poisoned").get(fp).cloned()),
                Token::None => None,
                Token::Any(s) => Some(s.clone()),
            };
            if let Some(t) = &token {
                b = b.header(HEADER_TOKEN, t);
            }
            let body = match &r.body {
                Body::None => Vec::new(),
                Body::Json(j) => serde_json::to_vec(&j.value(0)).expect("serialises"),
                Body::Raw(b) => b.clone(),
            };
            if !body.is_empty() {
                b = b.header(http::header::CONTENT_TYPE, "application/json");
            }
            for (h, v) in r.headers.iter().take(4) {
                b = b.header(HEADERS[usize::from(*h) % HEADERS.len()], v);
            }
            let Ok(mut req) = b.body(axum::body::Body::from(body)) else {
                continue;
            };
            req.extensions_mut().insert(PeerIdentity::from_parts(
                SocketAddr::from(([127, 0, 0, 1], 40000)),
                fp.clone(),
                fp.as_ref().map(|_| Arc::from(&b"peer certificate"[..])),
            ));
            let seen_path = req.uri().path().to_owned();
            let resp = f.router.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            if let Some(fp) = &fp
                && let Some(t) = resp.headers().get(HEADER_TOKEN).and_then(|v| v.to_str().ok())
            {
                // Whatever request it answered, a token the server issues is the newest.
                f.tokens
                    .lock()
                    .expect("not poisoned")
                    .insert(fp.clone(), t.to_owned());
            }
            let json = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            let bytes = resp
                .into_body()
                .collect()
                .await
                .expect("a readable body")
                .to_bytes();
            assert_ne!(
                status,
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "{method} {uri}: {}",
                String::from_utf8_lossy(&bytes)
            );
            if status.is_client_error() || status.is_server_error() {
                if method != http::Method::HEAD {
                    assert!(json, "{method} {uri} answered {status} without a JSON body");
                    let e: ErrorBody = match serde_json::from_slice(&bytes) {
                        Ok(e) => e,
                        Err(e) => panic!(
                            "{method} {uri} answered {status} with a body that is not an error: {e}: {}",
                            String::from_utf8_lossy(&bytes)
                        ),
                    };
                    let _ = e;
                }
            } else if status.is_success() {
                // What the caller is now (an administrator's request may have registered,
                // approved or promoted it).
                let rec = match &fp {
                    Some(fp) => f.service.store().get_client(fp).await.ok().flatten(),
                    None => None,
                };
                let active = rec.as_ref().is_some_and(|c| c.state == ClientState::Active);
                if !active && !PUBLIC.contains(&seen_path.as_str()) {
                    panic!("{method} {uri} answered {status} to a caller without an identity");
                }
                if who == 2 && rec.is_some_and(|c| c.role == ClientRole::Client) {
                    assert!(
                        !seen_path.starts_with("/v1/admin/"),
                        "{method} {uri} answered {status} to an ordinary client"
                    );
                }
            }
        }
        restore(f).await;
    });
});
