//! Typed calls to the keysafe API over mutual TLS. One `KeysafeClient` keeps a connection pool;
//! it is cheap to clone.

use crate::error::ClientError;
use crate::home::{ClientHome, ClientIdentity};
use crate::tls::{Observed, ServerTrust, client_config};
use bytes::Bytes;
use keysafe_proto::api::{
    ClientInfo, ClientList, ClientState, DepositInfo, DepositList, Health, ListQuery,
    OrgCreateRequest, OrgCreated, OrgList, OrgSetAuthRequest, OrgSetAuthResponse, PurgeResponse,
    PutResponse, RegisterRequest, VersionList,
};
use keysafe_proto::{
    ClientFingerprint, DepositName, DepositVersion, ErrorBody, HEADER_DEPOSIT_VERSION, OrgName,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A write precondition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// Only if the current version is this one (`If-Match`).
    IfMatch(DepositVersion),
    /// Only if the deposit does not exist yet (`If-None-Match: *`).
    IfAbsent,
}

/// A fetched deposit version.
pub struct Fetched {
    pub version: DepositVersion,
    pub payload: Bytes,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("version", &self.version)
            .field(
                "payload",
                &format_args!("[{} bytes redacted]", self.payload.len()),
            )
            .finish()
    }
}

#[derive(Clone)]
pub struct KeysafeClient {
    http: reqwest::Client,
    base: String,
    observed: Arc<Mutex<Observed>>,
}

impl std::fmt::Debug for KeysafeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysafeClient")
            .field("base", &self.base)
            .finish()
    }
}

/// Options for building a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Idle connections kept per host (the load generator uses 1 to pin one connection each).
    pub pool_max_idle_per_host: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            pool_max_idle_per_host: 8,
        }
    }
}

fn normalise_base(url: &str) -> Result<String, ClientError> {
    let u = url.trim_end_matches('/');
    if !u.starts_with("https://") {
        return Err(ClientError::Invalid(format!(
            "server URL {url:?} must start with https:// (keysafe has no plaintext listener)"
        )));
    }
    Ok(u.to_owned())
}

impl KeysafeClient {
    pub fn new(
        server_url: &str,
        identity: Option<&ClientIdentity>,
        trust: &ServerTrust,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        let base = normalise_base(server_url)?;
        let ident = identity.map(|i| (vec![i.cert.clone()], i.key.clone_key()));
        let (tls, observed) = client_config(trust, ident)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .pool_max_idle_per_host(options.pool_max_idle_per_host)
            .no_proxy()
            .user_agent(concat!("keysafe-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            observed,
        })
    }

    /// A client for a registered home: its identity, its first server, its pinned trust.
    pub fn from_home(home: &ClientHome) -> Result<Self, ClientError> {
        Self::from_home_with(home, &ClientOptions::default())
    }

    pub fn from_home_with(home: &ClientHome, options: &ClientOptions) -> Result<Self, ClientError> {
        let identity = home.identity()?;
        let url = home
            .config
            .servers
            .first()
            .ok_or_else(|| ClientError::Home("no server configured".into()))?;
        Self::new(url, Some(&identity), &home.trust()?, options)
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The fingerprint the server presented in the last handshake.
    pub fn observed_server_fingerprint(&self) -> Option<ClientFingerprint> {
        self.observed
            .lock()
            .ok()
            .and_then(|o| o.fingerprint.clone())
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A low-level request on this client's connection pool and identity, for callers that
    /// need something the typed methods do not offer (tests, diagnostics).
    pub fn raw_request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path)
    }

    pub(crate) fn transport_error(&self, e: reqwest::Error) -> ClientError {
        if let Ok(obs) = self.observed.lock()
            && let Some((expected, actual)) = &obs.mismatch
        {
            return ClientError::FingerprintMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            };
        }
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        ClientError::Connect {
            url: self.base.clone(),
            reason,
        }
    }

    pub(crate) async fn send(&self, rb: RequestBuilder) -> Result<Response, ClientError> {
        let resp = rb.send().await.map_err(|e| self.transport_error(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(api_error(resp).await)
    }

    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        rb: RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send(rb).await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected {
            status,
            detail: format!("invalid JSON: {e}"),
        })
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        let resp = self
            .request(Method::GET, "/v1/health")
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected {
            status,
            detail: format!("invalid health answer: {e}"),
        })
    }

    /// `GET /?a=fingerprint`.
    pub async fn server_fingerprint(&self) -> Result<ClientFingerprint, ClientError> {
        let resp = self
            .send(self.request(Method::GET, "/?a=fingerprint"))
            .await?;
        let text = resp.text().await.map_err(|e| self.transport_error(e))?;
        ClientFingerprint::parse(&text).map_err(|e| ClientError::Unexpected {
            status: 200,
            detail: e.to_string(),
        })
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<ClientInfo, ClientError> {
        self.json(self.request(Method::POST, "/v1/register").json(req))
            .await
    }

    pub async fn whoami(&self) -> Result<ClientInfo, ClientError> {
        self.json(self.request(Method::GET, "/v1/whoami")).await
    }

    pub async fn put(
        &self,
        name: &DepositName,
        payload: impl Into<Bytes>,
        pre: Precondition,
    ) -> Result<PutResponse, ClientError> {
        let mut rb = self
            .request(Method::PUT, &format!("/v1/deposits/{name}"))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(payload.into());
        rb = match pre {
            Precondition::None => rb,
            Precondition::IfMatch(v) => rb.header(reqwest::header::IF_MATCH, format!("\"{v}\"")),
            Precondition::IfAbsent => rb.header(reqwest::header::IF_NONE_MATCH, "*"),
        };
        self.json(rb).await
    }

    pub async fn get(
        &self,
        name: &DepositName,
        version: Option<DepositVersion>,
    ) -> Result<Fetched, ClientError> {
        let path = match version {
            Some(v) => format!("/v1/deposits/{name}?version={v}"),
            None => format!("/v1/deposits/{name}"),
        };
        let resp = self.send(self.request(Method::GET, &path)).await?;
        let version = resp
            .headers()
            .get(HEADER_DEPOSIT_VERSION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DepositVersion::parse(v).ok())
            .ok_or_else(|| ClientError::Unexpected {
                status: resp.status().as_u16(),
                detail: format!("missing {HEADER_DEPOSIT_VERSION} header"),
            })?;
        let payload = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        Ok(Fetched { version, payload })
    }

    pub async fn list(&self, q: &ListQuery) -> Result<DepositList, ClientError> {
        self.json(self.request(Method::GET, "/v1/deposits").query(q))
            .await
    }

    pub async fn versions(&self, name: &DepositName) -> Result<VersionList, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/deposits/{name}:versions")))
            .await
    }

    pub async fn delete(&self, name: &DepositName) -> Result<DepositInfo, ClientError> {
        self.json(self.request(Method::DELETE, &format!("/v1/deposits/{name}")))
            .await
    }

    pub async fn undelete(&self, name: &DepositName) -> Result<DepositInfo, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/deposits/{name}:undelete")))
            .await
    }

    pub async fn purge(&self, name: &DepositName) -> Result<PurgeResponse, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/deposits/{name}:purge")))
            .await
    }

    pub async fn create_org(&self, req: &OrgCreateRequest) -> Result<OrgCreated, ClientError> {
        self.json(self.request(Method::POST, "/v1/admin/orgs").json(req))
            .await
    }

    pub async fn list_orgs(&self) -> Result<OrgList, ClientError> {
        self.json(self.request(Method::GET, "/v1/admin/orgs")).await
    }

    pub async fn set_org_auth(
        &self,
        org: &OrgName,
        req: &OrgSetAuthRequest,
    ) -> Result<OrgSetAuthResponse, ClientError> {
        self.json(
            self.request(Method::PUT, &format!("/v1/admin/orgs/{org}/auth"))
                .json(req),
        )
        .await
    }

    pub async fn list_clients(
        &self,
        org: Option<&OrgName>,
        state: Option<ClientState>,
    ) -> Result<ClientList, ClientError> {
        let mut q: Vec<(&str, &str)> = Vec::new();
        if let Some(o) = org {
            q.push(("org", o.as_str()));
        }
        if let Some(s) = state {
            q.push(("state", s.as_str()));
        }
        self.json(self.request(Method::GET, "/v1/admin/clients").query(&q))
            .await
    }

    /// `approve`, `disable` or `enable` a client.
    pub async fn client_action(
        &self,
        fp: &ClientFingerprint,
        action: &str,
    ) -> Result<ClientInfo, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/admin/clients/{fp}/{action}")))
            .await
    }
}

async fn api_error(resp: Response) -> ClientError {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(b) => ClientError::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
            request_id: b.error.request_id,
        },
        Err(_) => ClientError::Unexpected {
            status: status.as_u16(),
            detail: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

/// True if the error means the server refused for a reason a retry elsewhere could fix.
pub fn is_retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Api { code, .. } => code.is_retryable(),
        ClientError::Unexpected { status, .. } => {
            StatusCode::from_u16(*status).is_ok_and(|s| s.is_server_error())
        }
        _ => false,
    }
}
