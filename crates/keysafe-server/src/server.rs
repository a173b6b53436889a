//! The accept loop. Each connection is admitted by the connection limiter (a global cap and a
//! cap per source address; over the latter it is closed at once), then gets its own task: the
//! TLS handshake under a timeout, the peer's fingerprint computed once, then
//! `keysafe_net::serve_connection` (first-byte deadline, HTTP/1 or HTTP/2, idle and keep-alive
//! limits, stalled-body timeout, lingering close) serving the router with that identity
//! attached to every request. Handshakes never serialise behind each other. Shutdown stops
//! accepting, asks every connection to close once its requests are answered, waits up to the
//! grace period, then returns.

use crate::config::{Config, SealConfig};
use crate::identity::PeerIdentity;
use crate::routes::router;
use crate::seal::{SealInputs, open_seal};
use crate::state::{AppState, AppStateInner, RegistrationLimits};
use crate::tls;
use anyhow::Context;
use hyper_util::service::TowerToHyperService;
use keysafe_core::{Service, SystemClock};
use keysafe_net::io::Protocol;
use keysafe_net::{ConnectionLimiter, ConnectionSettings, TimedBody};
use keysafe_proto::ClientFingerprint;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Everything `run` needs: the router with its state, and the TLS and connection settings.
#[derive(Clone)]
pub struct App {
    pub state: AppState,
    pub tls: Arc<rustls::ServerConfig>,
    pub handshake_timeout: Duration,
    /// Per-connection limits.
    pub connection: ConnectionSettings,
    pub shutdown_grace: Duration,
    /// How often the seal's key is re-checked.
    pub seal_check_interval: Duration,
    pub rewrap: keysafe_core::service::rewrap::RewrapSettings,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("fingerprint", &self.state.fingerprint())
            .finish_non_exhaustive()
    }
}

impl App {
    pub fn fingerprint(&self) -> ClientFingerprint {
        self.state.fingerprint()
    }
}

/// Opens the store and the seal named by the configuration and builds the app. A passphrase
/// seal starts sealed (see [`open_app_with`] to pass a passphrase).
pub async fn open_app(config: &Config) -> anyhow::Result<App> {
    open_app_with(config, &SealInputs::default()).await
}

/// [`open_app`] with the secrets given at start.
pub async fn open_app_with(config: &Config, inputs: &SealInputs) -> anyhow::Result<App> {
    let server_tls = tls::ServerTls::load(config)?;
    let tls = server_tls.server_config(config)?;
    // The file and HSM seals are opened before the database is touched, so a wrong PIN or an
    // unreadable root key stops the start with the database untouched. The passphrase seal
    // needs its Argon2id parameters, which live with the keyring rows.
    let early = match config.seal {
        SealConfig::Passphrase => None,
        _ => Some(open_seal(config, inputs, &[]).await?),
    };
    let store = keysafe_store::open(&config.storage)
        .await
        .with_context(|| format!("cannot open the storage {}", config.storage))?;
    let seal = match early {
        Some(s) => s,
        None => open_seal(config, inputs, &store.load_keks().await?).await?,
    };
    let limits = config.limits();
    let service = match seal {
        Ok(seal) => Service::open(store.clone(), seal, Arc::new(SystemClock), limits)
            .await
            .context("cannot open the keyring")?,
        Err(e) => {
            let s = Service::open(store.clone(), None, Arc::new(SystemClock), limits).await?;
            tracing::error!(error = %e, "the HSM key is gone: starting sealed");
            s.on_seal_error(&e);
            s
        }
    };
    let service = Arc::new(service);
    // Audit trail: the signing key exists from the first start (a server that starts
    // sealed makes or loads it on first use after unsealing); the queue, the checkpoints and
    // the sinks run for as long as the process does.
    if !service.is_sealed() {
        service
            .audit_signer()
            .await
            .context("cannot open the audit signing key")?;
    }
    crate::metrics::handle();
    let cluster = crate::cluster::ClusterNode::open(config)?;
    let mut audit_config = config.audit.clone();
    audit_config.spool = Some((
        config.data_dir.join(crate::audit_spool::SPOOL_FILE),
        cluster.id.to_string(),
    ));
    let audit = crate::audit::AuditTrail::start(&audit_config, store.clone());
    crate::audit::spawn_checkpoints(service.clone(), config.audit.checkpoint_interval);
    crate::audit::spawn_sinks(&config.audit, store);
    Ok(App {
        state: AppState::new(AppStateInner {
            audit,
            service,
            tls: server_tls,
            health_log: Default::default(),
            registration: Arc::new(RegistrationLimits::from_config(config)),
            anonymous: Arc::new(crate::anonymous::AnonymousAudit::new(
                config.audit.anonymous,
                config.audit.node.clone(),
            )),
            backup: Arc::new(crate::backup::BackupSources::of(config)),
            connections: ConnectionLimiter::new(
                config.max_connections,
                config.max_connections_per_address,
            ),
            request_timeout: config.request_timeout,
            cluster,
        }),
        tls: Arc::new(tls),
        handshake_timeout: config.handshake_timeout,
        connection: config.connection.clone(),
        shutdown_grace: config.shutdown_grace,
        seal_check_interval: config.seal_check_interval,
        rewrap: config.rewrap.clone(),
    })
}

/// Serves HTTPS on `listener` until `shutdown` completes, then drains connections.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_with_ready(listener, app, || {}, shutdown).await
}

/// [`run`], calling `ready` once: when the background jobs are started and the router is built,
/// before the first connection is accepted (connections that arrive earlier wait in the
/// listener's backlog).
pub async fn run_with_ready(
    listener: TcpListener,
    app: App,
    ready: impl FnOnce() + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // Background jobs: the re-wrap job and the periodic seal check. They end with
    // the runtime; neither holds anything that needs a clean shutdown (every write is atomic).
    let rewrap = tokio::spawn(app.state.service.clone().run_rewrap_job(app.rewrap.clone()));
    let checker = {
        let service = app.state.service.clone();
        let every = app.seal_check_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                service.check_seal().await;
            }
        })
    };
    // Summaries of sampled anonymous requests reach the chain once per interval.
    let summaries = {
        let anonymous = app.state.anonymous.clone();
        let audit = app.state.audit.clone();
        let every = anonymous.config().interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Some(summary) = anonymous.flush(true) {
                    audit.record(summary);
                }
            }
        })
    };
    let mut jobs = vec![rewrap, checker, summaries];
    // Heartbeats, changes made through other nodes, and this node's seal announcement.
    jobs.extend(app.state.cluster.spawn(app.state.clone()));
    let _jobs = AbortOnDrop(jobs);
    let acceptor = TlsAcceptor::from(app.tls.clone());
    let router = router(app.state.clone());
    let limiter = app.state.connections.clone();
    let settings = Arc::new(app.connection.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    metrics::counter!("keysafe_connections_refused_total", "reason" => keysafe_net::Refused::PerSource.as_str())
        .increment(0);
    tokio::pin!(shutdown);
    ready();
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            s = limiter.slot() => match s {
                Some(s) => s,
                None => break,
            },
        };
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match limiter.admit(slot, remote.ip()) {
            Ok(p) => p,
            Err(refused) => {
                metrics::counter!("keysafe_connections_refused_total", "reason" => refused.as_str())
                    .increment(1);
                tracing::debug!(%remote, reason = refused.as_str(), "connection refused");
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let settings = settings.clone();
        let timeout = app.handshake_timeout;
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    metrics::counter!("keysafe_tls_handshake_failures_total", "reason" => "error")
                        .increment(1);
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics::counter!("keysafe_tls_handshake_failures_total", "reason" => "timeout")
                        .increment(1);
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let (_, session) = tls.get_ref();
            let peer = PeerIdentity::from_certs(remote, session.peer_certificates());
            let alpn = Protocol::from_alpn(session.alpn_protocol());
            let svc = router.map_request(
                move |mut req: axum::extract::Request<TimedBody<hyper::body::Incoming>>| {
                    req.extensions_mut().insert(peer.clone());
                    req
                },
            );
            let end = keysafe_net::serve_connection(
                tls,
                alpn,
                &settings,
                TowerToHyperService::new(svc),
                stop,
            )
            .await;
            metrics::counter!("keysafe_connections_closed_total", "reason" => end.as_str())
                .increment(1);
            tracing::debug!(%remote, end = end.as_str(), "connection closed");
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = limiter.drained() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(app.shutdown_grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
    if let Some(summary) = app.state.anonymous.flush(true) {
        app.state.audit.record(summary);
    }
    // The last entries reach the chain, and its head is signed.
    app.state.audit.flush(Duration::from_secs(5)).await;
    if let Err(e) = app.state.service.audit_checkpoint().await {
        tracing::warn!(error = %e, "cannot sign the final audit checkpoint");
    }
    Ok(())
}

/// Aborts background tasks when `run` returns.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
