use keysafe_kms::{Gateway, KmsConfig};
use keysafe_testkit::{TestClient, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tempfile::TempDir;
use tokio::sync::oneshot;

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

/// A running gateway on 127.0.0.x.
pub struct Gw {
    pub addr: SocketAddr,
    pub base: String,
    pub gw: Arc<Gateway>,
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Gw {
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("kms-audit.log")
    }
}

/// A keysafe server and the gateway's registered client.
pub struct Env {
    pub server: TestServer,
    pub client: TestClient,
}

impl Env {
    pub async fn new() -> Env {
        let server = TestServer::start().await;
        let client = server.new_client("hadoop").await;
        Env { server, client }
    }

    pub async fn gateway(
        &self,
        ip: &str,
        tweak: impl FnOnce(&mut KmsConfig, &std::path::Path),
    ) -> Gw {
        self.gateway_as(&self.client, ip, tweak).await
    }

    /// A gateway running as another registered client.
    pub async fn gateway_as(
        &self,
        who: &TestClient,
        ip: &str,
        tweak: impl FnOnce(&mut KmsConfig, &std::path::Path),
    ) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = KmsConfig {
            audit_log: Some(dir.path().join("kms-audit.log")),
            // These tests exercise operations, not the defaults: everyone administers keys
            // (what Hadoop's shipped kms-acls.xml allows). Tests of the safe defaults and of
            // ACL files set their own.
            key_admins: "*".into(),
            ..Default::default()
        };
        tweak(&mut cfg, dir.path());
        let gw = Gateway::new(&who.home, Gateway::client_for(&who.home).unwrap(), &cfg)
            .await
            .unwrap();
        serve_gateway(gw, dir, ip, cfg.tls.is_some()).await
    }
}

/// Serves `gw` on `ip` (`a.b.c.d` for port 0, or `a.b.c.d:port`).
pub async fn serve_gateway(gw: Arc<Gateway>, dir: TempDir, ip: &str, https: bool) -> Gw {
    {
        let bind = if ip.contains(':') {
            ip.to_owned()
        } else {
            format!("{ip}:0")
        };
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if https { "https" } else { "http" };
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(keysafe_kms::server::serve(listener, gw.clone(), async {
            let _ = rx.await;
        }));
        Gw {
            addr,
            base: format!("{scheme}://{addr}/kms/v1"),
            gw,
            dir,
            stop: Some(tx),
        }
    }
}

/// A Hadoop-like caller: does the pseudo handshake once, then sends only the cookie.
pub struct Caller {
    pub http: reqwest::Client,
    pub user: String,
    pub cookie: Option<String>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        assert!(
            self.headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().starts_with("application/json"))
                .unwrap_or(false),
            "not JSON: {:?} {}",
            self.headers,
            self.text
        );
        serde_json::from_str(&self.text).unwrap()
    }
    /// The RemoteException's javaClassName.
    pub fn exception(&self) -> String {
        self.json()["RemoteException"]["javaClassName"]
            .as_str()
            .unwrap()
            .to_owned()
    }
    pub fn message(&self) -> String {
        self.json()["RemoteException"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

pub fn set_cookie(h: &reqwest::header::HeaderMap) -> Option<String> {
    h.get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("hadoop.auth=\""))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

impl Caller {
    pub fn new(user: &str) -> Caller {
        Caller {
            http: http(),
            user: user.into(),
            cookie: None,
        }
    }

    pub async fn login(&mut self, base: &str) {
        let r = self
            .http
            .request(
                Method::OPTIONS,
                format!("{base}/keys/names?user.name={}", self.user),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        self.cookie = Some(set_cookie(r.headers()).expect("cookie"));
    }

    pub async fn raw(&self, method: Method, url: &str, body: Option<&str>) -> Resp {
        let mut rb = self.http.request(method, url);
        if let Some(c) = &self.cookie {
            rb = rb.header("cookie", c);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let r = rb.send().await.unwrap();
        Resp {
            status: r.status(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    }

    pub async fn call(&mut self, gw: &Gw, method: Method, path: &str, body: Option<&str>) -> Resp {
        if self.cookie.is_none() {
            self.login(&gw.base).await;
        }
        self.raw(method, &format!("{}{path}", gw.base), body).await
    }
}
