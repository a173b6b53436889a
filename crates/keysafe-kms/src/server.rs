//! The accept loop: plain HTTP/1.1, or HTTPS with the configured certificate (re-read on SIGHUP
//! and when its files change; connections already open keep the configuration they started
//! with, new ones get the new one, so nothing is dropped). With certificate authentication the
//! handshake requires a client certificate from the configured CA, and the verified leaf rides
//! on every request. Every request also carries the peer address (proxy-user host rules, audit).
//!
//! Listener protections: a global connection limit and one per client address; a deadline from
//! accept to the first request's headers (TLS handshake included); an idle keep-alive or
//! trickling request head is closed after `limits.idle_timeout` (hyper's header-read timeout,
//! which starts when the connection waits for a request); request heads are bounded by
//! `limits.max_header_bytes`; bodies are read only after authentication, bounded in size and
//! time (`http::read_body`).

use crate::certauth::PeerCertificate;
use crate::config::{LimitsConfig, TlsConfig};
use crate::gateway::Gateway;
use crate::http::{RemoteAddr, router};
use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How often the certificate files are checked for changes.
const TLS_WATCH_INTERVAL: Duration = Duration::from_secs(5);

fn load_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad certificate PEM in {}", path.display()))?;
    if chain.is_empty() {
        anyhow::bail!("no certificate in {}", path.display());
    }
    Ok(chain)
}

/// Builds the HTTPS configuration: the certificate chain and key, and with `client_ca` a
/// verifier that requires a client certificate issued by it.
pub fn tls_config(
    cfg: &TlsConfig,
    client_ca: Option<&Path>,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, i64)> {
    let chain = load_chain(&cfg.cert)?;
    let not_after = x509_parser::parse_x509_certificate(chain[0].as_ref())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .unwrap_or(0);
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .with_context(|| format!("cannot read a private key from {}", cfg.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(crate::certauth::client_roots(ca)?);
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| anyhow::anyhow!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut c = builder
        .with_single_cert(chain, key)
        .context("the certificate and key do not match")?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(c), not_after))
}

/// The HTTPS configuration in force, reloadable.
pub struct TlsSource {
    cfg: TlsConfig,
    client_ca: Option<PathBuf>,
    current: RwLock<Arc<rustls::ServerConfig>>,
    seen: Mutex<Vec<Option<SystemTime>>>,
    not_after: std::sync::atomic::AtomicI64,
}

impl TlsSource {
    pub fn load(cfg: &TlsConfig, client_ca: Option<&Path>) -> anyhow::Result<Arc<TlsSource>> {
        let (c, not_after) = tls_config(cfg, client_ca)?;
        let s = TlsSource {
            cfg: cfg.clone(),
            client_ca: client_ca.map(Path::to_owned),
            current: RwLock::new(c),
            seen: Mutex::new(Vec::new()),
            not_after: std::sync::atomic::AtomicI64::new(not_after),
        };
        *s.seen.lock().unwrap_or_else(|p| p.into_inner()) = s.mtimes();
        Ok(Arc::new(s))
    }

    fn mtimes(&self) -> Vec<Option<SystemTime>> {
        let mut files = vec![&self.cfg.cert, &self.cfg.key];
        if let Some(ca) = &self.client_ca {
            files.push(ca);
        }
        files
            .into_iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The certificate's `notAfter`, epoch seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// Re-reads the files. On failure the configuration in force stays (and the error says
    /// why); connections already open are never affected.
    pub fn reload(&self) -> anyhow::Result<()> {
        let mtimes = self.mtimes();
        let r = tls_config(&self.cfg, self.client_ca.as_deref());
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = mtimes;
        let (c, not_after) = r?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = c;
        self.not_after.store(not_after, Ordering::Relaxed);
        Ok(())
    }

    /// Reloads if a file changed since the last (attempted) load. Returns whether it tried.
    pub fn reload_if_changed(&self) -> bool {
        let now = self.mtimes();
        let changed = *self.seen.lock().unwrap_or_else(|p| p.into_inner()) != now;
        if changed {
            match self.reload() {
                Ok(()) => {
                    tracing::info!(cert = %self.cfg.cert.display(), "reloaded the TLS certificate")
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot reload the TLS certificate; keeping the current one")
                }
            }
        }
        changed
    }

    /// Checks the files every few seconds while the source lives.
    pub fn spawn_watcher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TLS_WATCH_INTERVAL).await;
                match weak.upgrade() {
                    Some(s) => {
                        s.reload_if_changed();
                    }
                    None => break,
                }
            }
        });
    }
}

/// Open connections, overall and per client address.
#[derive(Default)]
pub struct Connections {
    open: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one connection's place; released on drop.
pub struct ConnectionSlot {
    owner: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.owner.open.fetch_sub(1, Ordering::Relaxed);
        let mut m = self
            .owner
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl Connections {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot for a connection from `ip`, or None if that address holds `max` already.
    fn admit(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let mut m = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionSlot {
            owner: self.clone(),
            ip,
        })
    }
}

/// Serves until `shutdown` completes. Refuses pseudo authentication on a non-loopback address
/// unless the configuration allows it by name.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve_with_ready(listener, gw, || {}, shutdown).await
}

/// [`serve`], calling `ready` once: when the listen address is checked and the router is built,
/// before the first connection is accepted (connections that arrive earlier wait in the
/// listener's backlog).
pub async fn serve_with_ready(
    listener: TcpListener,
    gw: Arc<Gateway>,
    ready: impl FnOnce() + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    gw.check_listen(listener.local_addr()?)?;
    let app = router(gw.clone());
    let limits: LimitsConfig = gw.limits.clone();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_header_size(limits.max_header_bytes)
        // At least 8192 (hyper panics below it); validated in the configuration.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    ready();
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let accepted_at = Instant::now();
        let Some(slot) = gw
            .connections
            .admit(remote.ip(), limits.max_connections_per_address)
        else {
            gw.metrics.with(|| {
                metrics::counter!("keysafe_kms_connections_refused_total", "reason" => "per_address")
                    .increment(1)
            });
            tracing::debug!(%remote, "too many connections from this address; closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let seen_request = Arc::new(AtomicBool::new(false));
        let seen = seen_request.clone();
        let app = app.clone();
        let builder = builder.clone();
        let tls = gw.tls.as_ref().map(|t| TlsAcceptor::from(t.current()));
        let watcher = graceful.watcher();
        let gw2 = gw.clone();
        let first_deadline = accepted_at + limits.first_request_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let tag = move |peer: Option<PeerCertificate>| {
                let seen = seen.clone();
                app.clone().map_request(
                    move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                        seen.store(true, Ordering::Relaxed);
                        req.extensions_mut().insert(RemoteAddr(remote));
                        if let Some(p) = &peer {
                            req.extensions_mut().insert(p.clone());
                        }
                        req
                    },
                )
            };
            let deadline = tokio::time::Instant::from_std(first_deadline);
            let result = match tls {
                Some(acc) => {
                    let s = match tokio::time::timeout_at(deadline, acc.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            gw2.metrics.with(|| metrics::counter!("keysafe_kms_tls_handshake_failures_total", "reason" => "error").increment(1));
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            gw2.metrics.with(|| metrics::counter!("keysafe_kms_tls_handshake_failures_total", "reason" => "timeout").increment(1));
                            return;
                        }
                    };
                    let peer = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| PeerCertificate(Arc::new(c.clone().into_owned())));
                    let conn = builder
                        .serve_connection(TokioIo::new(s), TowerToHyperService::new(tag(peer)));
                    run_connection(&gw2, watcher.watch(conn), deadline, &seen_request).await
                }
                None => {
                    let conn = builder
                        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(tag(None)));
                    run_connection(&gw2, watcher.watch(conn), deadline, &seen_request).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {},
        _ = tokio::time::sleep(Duration::from_secs(5)) => {},
    }
    Ok(())
}

/// Drives a connection, dropping (closing) it if no request has arrived by `deadline`.
async fn run_connection<F, E>(
    gw: &Gateway,
    conn: F,
    deadline: tokio::time::Instant,
    seen_request: &AtomicBool,
) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = &mut conn => return r,
        _ = tokio::time::sleep_until(deadline) => {}
    }
    if !seen_request.load(Ordering::Relaxed) {
        gw.metrics.with(|| {
            metrics::counter!("keysafe_kms_connections_refused_total", "reason" => "first_request_timeout")
                .increment(1)
        });
        return Ok(());
    }
    conn.await
}
