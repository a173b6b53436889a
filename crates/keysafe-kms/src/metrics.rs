//! The gateway's health and Prometheus metrics: counters and latency histograms per KMS
//! operation (a fixed set of labels, never key or user names), connection gauges, and the state
//! `GET /health` reports (keysafe reachable, ACL file loaded, TLS certificate expiry). Served
//! as plain HTTP on the gateway's own local listener (`metrics_listen`), never on the KMS port;
//! `GET /health` is also answered on the KMS port from the same cached state.

use crate::gateway::Gateway;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{Method, StatusCode};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// The gateway's own metrics registry. Not the process-wide recorder: a gateway running in the
/// same process as a keysafe server (or another gateway) keeps its figures apart.
pub struct GatewayMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(
            Matcher::Full("keysafe_kms_request_duration_seconds".into()),
            LATENCY_BUCKETS,
        ) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Self { recorder, handle }
    }
}

impl GatewayMetrics {
    /// Runs `f` with this registry as the recorder of the `metrics` macros inside it.
    pub fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }
}

/// The operation a request names, from a fixed set (label values never come from the client).
pub fn route_label(method: &Method, segs: &[String]) -> &'static str {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method.clone(), s.as_slice()) {
        (Method::OPTIONS, _) => "handshake",
        (Method::POST, ["keys"]) => "create_key",
        (Method::GET, ["keys", "names"]) => "get_keys",
        (Method::GET, ["keys", "metadata"]) => "get_keys_metadata",
        (Method::DELETE, ["key", _]) => "delete_key",
        (Method::POST, ["key", _]) => "roll_new_version",
        (Method::POST, ["key", _, "_invalidatecache"]) => "invalidate_cache",
        (Method::GET, ["key", _]) | (Method::GET, ["key", _, "_metadata"]) => "get_metadata",
        (Method::GET, ["key", _, "_currentversion"]) => "get_current_key",
        (Method::GET, ["key", _, "_versions"]) => "get_key_versions",
        (Method::GET, ["key", _, "_eek"]) => "generate_eek",
        (Method::POST, ["key", _, "_reencryptbatch"]) => "reencrypt_eek_batch",
        (Method::GET, ["keyversion", _]) => "get_key_version",
        (Method::POST, ["keyversion", _, "_eek"]) => "eek_op",
        _ => "other",
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        200..=299 => "2xx",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        429 => "429",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

pub fn record_request(gw: &Gateway, op: &'static str, status: StatusCode, took: Duration) {
    gw.metrics.with(|| {
        metrics::counter!("keysafe_kms_requests_total", "op" => op, "status" => status_class(status))
            .increment(1);
        metrics::histogram!("keysafe_kms_request_duration_seconds", "op" => op)
            .record(took.as_secs_f64());
    });
}

/// What the health endpoints report, updated by a background probe of keysafe.
#[derive(Default)]
pub struct Health {
    last_ok_ms: AtomicI64,
    last_fail_ms: AtomicI64,
}

pub struct HealthSnapshot {
    pub keysafe_ok: bool,
    pub last_ok_secs_ago: Option<i64>,
}

/// keysafe is considered reachable while the last probe succeeded within this.
const HEALTHY_WITHIN_MS: i64 = 30_000;

impl Health {
    pub fn record(&self, ok: bool) {
        let now = crate::auth::now_ms();
        if ok {
            self.last_ok_ms.store(now, Ordering::Relaxed);
        } else {
            self.last_fail_ms.store(now, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let now = crate::auth::now_ms();
        let ok = self.last_ok_ms.load(Ordering::Relaxed);
        let fail = self.last_fail_ms.load(Ordering::Relaxed);
        HealthSnapshot {
            keysafe_ok: ok > 0 && ok >= fail && now - ok < HEALTHY_WITHIN_MS,
            last_ok_secs_ago: (ok > 0).then(|| (now - ok) / 1000),
        }
    }
}

/// Probes keysafe every `every` (and once at once) until the gateway is dropped.
pub fn spawn_probe(gw: &Arc<Gateway>, every: Duration) {
    let weak = Arc::downgrade(gw);
    tokio::spawn(async move {
        loop {
            let Some(gw) = weak.upgrade() else { break };
            let ok = gw.kms.backend().ping().await.is_ok();
            gw.health.record(ok);
            drop(gw);
            tokio::time::sleep(every).await;
        }
    });
}

/// Sets the gauges read at scrape time and renders the exposition text.
pub fn render(gw: &Gateway) -> String {
    let h = gw.health.snapshot();
    gw.metrics.with(|| {
        metrics::gauge!("keysafe_kms_keysafe_reachable").set(if h.keysafe_ok { 1.0 } else { 0.0 });
        metrics::gauge!("keysafe_kms_acl_file_ok").set(if gw.acls.file_ok() { 1.0 } else { 0.0 });
        if let Some(t) = &gw.tls {
            metrics::gauge!("keysafe_kms_tls_certificate_not_after_seconds")
                .set(t.not_after() as f64);
        }
        metrics::gauge!("keysafe_kms_connections").set(gw.connections.open() as f64);
    });
    gw.metrics.handle.run_upkeep();
    gw.metrics.handle.render()
}

async fn metrics_route(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&gw),
    )
}

async fn health_route(State(gw): State<Arc<Gateway>>) -> axum::response::Response {
    crate::http::health(&gw)
}

/// Serves `GET /metrics` and `GET /health` on `listener` (plain HTTP) until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_route))
        .route("/health", get(health_route))
        .with_state(gw);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
