//! Prometheus metrics: counters and histograms recorded where things happen (requests in the
//! middleware, TLS handshake failures in the accept loop, audit losses in the audit queue), and
//! gauges read at scrape time (clients by state, deposits, seal, audit queue, database pool,
//! identity cache). Served as plain HTTP on a separate listener (`metrics.listen`, default
//! 127.0.0.1:11372), never on the TLS port. Labels carry route templates, a fixed set of
//! methods and states, never names, fingerprints, paths or anything else a client chose.

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// Installs the process-wide recorder once (the `metrics` facade is global by design) and
/// returns its handle; `None` if another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("keysafe_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .as_ref()
}

/// Sets the gauges read at scrape time and renders the exposition text.
pub async fn render(state: &AppState) -> String {
    let service = &state.service;
    metrics::gauge!("keysafe_sealed").set(if service.is_sealed() { 1.0 } else { 0.0 });
    metrics::gauge!("keysafe_audit_queue_depth").set(state.audit.depth() as f64);
    metrics::gauge!("keysafe_audit_queue_capacity").set(state.audit.capacity() as f64);
    metrics::gauge!("keysafe_audit_healthy").set(if state.audit.is_healthy() { 1.0 } else { 0.0 });
    metrics::gauge!("keysafe_audit_head_seq").set(service.store().audit_head().0 as f64);
    metrics::gauge!("keysafe_connections_open").set(state.connections.active() as f64);
    metrics::gauge!("keysafe_connection_sources").set(state.connections.sources() as f64);
    let (hits, misses) = service.identity_cache_stats();
    metrics::counter!("keysafe_identity_cache_hits_total").absolute(hits);
    metrics::counter!("keysafe_identity_cache_misses_total").absolute(misses);
    match service.store().stats().await {
        Ok(s) => {
            for st in [
                keysafe_proto::api::ClientState::Pending,
                keysafe_proto::api::ClientState::Active,
                keysafe_proto::api::ClientState::Disabled,
                keysafe_proto::api::ClientState::SuspectedClone,
            ] {
                let n = s
                    .clients_by_state
                    .iter()
                    .find(|(k, _)| *k == st)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("keysafe_clients", "state" => st.as_str()).set(n as f64);
            }
            metrics::gauge!("keysafe_deposits").set(s.deposits as f64);
            metrics::gauge!("keysafe_deposit_versions").set(s.deposit_versions as f64);
            let idle = f64::from(s.pool_idle);
            metrics::gauge!("keysafe_db_pool_connections", "state" => "idle").set(idle);
            metrics::gauge!("keysafe_db_pool_connections", "state" => "busy")
                .set(f64::from(s.pool_size) - idle);
            metrics::gauge!("keysafe_db_up").set(1.0);
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read store counts");
            metrics::gauge!("keysafe_db_up").set(0.0);
        }
    }
    handle().map(|h| h.render()).unwrap_or_default()
}

async fn metrics_route(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&state).await,
    )
}

/// Serves `GET /metrics` on `listener` (plain HTTP) until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_route))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
