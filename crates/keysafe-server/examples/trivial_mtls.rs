//! The ceiling for the hot-path benchmark (`scripts/bench-hotpath.sh`): a trivial axum handler
//! behind exactly keysafe's transport. It reads a keysafe data directory's configuration and
//! serves that server's certificate through the same [`ServerTls`] resolver and the same
//! client-certificate verifier (`tls::ServerTls::server_config`), accepts connections as
//! `keysafe_server::run` does (the connection limiter, the TLS handshake in a task of its own
//! under the handshake timeout, the peer identity attached to every request) and serves them
//! with `keysafe_net::serve_connection` and the configured connection limits. What it leaves
//! out is everything keysafe does per request: no middleware, no authentication, no database.
//!
//! ```sh
//! cargo run --release -p keysafe-server --example trivial_mtls -- DATA_DIR 127.0.0.1:0
//! ```
//!
//! Prints `listening on ADDR` once bound; `GET /` answers the server's fingerprint.

use anyhow::Context;
use hyper_util::service::TowerToHyperService;
use keysafe_net::io::Protocol;
use keysafe_net::{ConnectionLimiter, TimedBody};
use keysafe_server::config::Config;
use keysafe_server::identity::PeerIdentity;
use keysafe_server::tls::ServerTls;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let dir = std::path::PathBuf::from(args.next().context("usage: trivial_mtls DATA_DIR ADDR")?);
    let addr: SocketAddr = args
        .next()
        .context("usage: trivial_mtls DATA_DIR ADDR")?
        .to_str()
        .context("ADDR is not UTF-8")?
        .parse()?;
    let config = Config::load(&dir)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(config, addr))
}

async fn serve(config: Config, addr: SocketAddr) -> anyhow::Result<()> {
    let server_tls = ServerTls::load(&config)?;
    let acceptor = TlsAcceptor::from(Arc::new(server_tls.server_config(&config)?));
    let body = server_tls.fingerprint().to_string();
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    let limiter =
        ConnectionLimiter::new(config.max_connections, config.max_connections_per_address);
    let settings = Arc::new(config.connection.clone());
    // Never asked to stop: the benchmark kills the process.
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    loop {
        let Some(slot) = limiter.slot().await else {
            return Ok(());
        };
        let (tcp, remote) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limiter.admit(slot, remote.ip()) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let settings = settings.clone();
        let stop = stop_rx.clone();
        let timeout = config.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(tls)) = tokio::time::timeout(timeout, acceptor.accept(tcp)).await else {
                return;
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
            keysafe_net::serve_connection(
                tls,
                alpn,
                &settings,
                TowerToHyperService::new(svc),
                stop,
            )
            .await;
        });
    }
}
