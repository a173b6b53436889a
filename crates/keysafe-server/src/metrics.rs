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

/// The commit this server was built from (`build.rs`), or "unknown".
pub const GIT_COMMIT: &str = env!("KEYSAFE_GIT_COMMIT");

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
                Ok(h) => {
                    describe();
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .as_ref()
}

/// The two series of one operation and status.
type RequestSeries = (metrics::Counter, metrics::Histogram);

/// Request series by operation and status, looked up once: recording a request is then a read
/// lock and two atomic updates, where the `metrics` macros build the key (labels, allocations,
/// a hash) and ask the registry on every call. Both labels come from bounded sets (the method
/// label and route template, the status label), so the map is bounded too. Filled only once the
/// process-wide recorder is installed: a handle taken before that would record nowhere.
static REQUEST_SERIES: OnceLock<std::sync::RwLock<SeriesByOperation>> = OnceLock::new();

/// Operation → (status label, series) pairs.
type SeriesByOperation = std::collections::HashMap<String, Vec<(&'static str, RequestSeries)>>;

/// Whether the process-wide recorder is installed: a handle taken before that records
/// nowhere, so handles are kept only from then on.
pub fn recorder_installed() -> bool {
    HANDLE.get().is_some_and(Option::is_some)
}

/// Counts a request in `keysafe_requests_total` and its time in
/// `keysafe_request_duration_seconds`, both labelled by operation and status.
pub fn record_request(operation: &str, status: &'static str, elapsed: std::time::Duration) {
    let secs = elapsed.as_secs_f64();
    let installed = recorder_installed();
    let map = REQUEST_SERIES.get_or_init(Default::default);
    if installed
        && let Ok(m) = map.read()
        && let Some((_, (counter, histogram))) = m
            .get(operation)
            .and_then(|v| v.iter().find(|(s, _)| *s == status))
    {
        counter.increment(1);
        histogram.record(secs);
        return;
    }
    let (counter, histogram) = series(operation, status);
    counter.increment(1);
    histogram.record(secs);
    if installed && let Ok(mut m) = map.write() {
        let v = m.entry(operation.to_owned()).or_default();
        if !v.iter().any(|(s, _)| *s == status) {
            v.push((status, (counter, histogram)));
        }
    }
}

fn series(operation: &str, status: &'static str) -> RequestSeries {
    let op = operation.to_owned();
    (
        metrics::counter!("keysafe_requests_total", "operation" => op.clone(), "status" => status),
        metrics::histogram!("keysafe_request_duration_seconds", "operation" => op, "status" => status),
    )
}

/// `# HELP` text for every series keysafe records (the exporter prints a family's HELP only
/// once it is described). A test checks that every family rendered has one.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "keysafe_storage_read_only",
        "1 while the database has no reachable primary and only a standby answers (writes are refused with read_only), else 0"
    );
    describe_counter!(
        "keysafe_cluster_changes_total",
        "Changes made through other nodes that this node applied, by how it learnt of them (announcement, poll: an announcement was missed, resync: after the listener reconnected)"
    );
    describe_gauge!(
        "keysafe_database_replicas",
        "Standbys connected to the database primary, as the primary reports them (pg_stat_replication); 0 while no primary answers"
    );
    describe_gauge!(
        "keysafe_database_replica_lag_bytes",
        "WAL bytes the primary's standby has not replayed yet, by standby (NaN once the standby is no longer connected)"
    );
    describe_gauge!(
        "keysafe_database_replica_replay_lag_seconds",
        Unit::Seconds,
        "Replay lag of the primary's standby, by standby (0 when it has replayed everything; NaN once it is no longer connected)"
    );
    describe_counter!(
        "keysafe_audit_spooled_total",
        "Audit entries written to this node's spool because the database accepted no writes"
    );
    describe_gauge!(
        "keysafe_audit_spooled_entries",
        "Audit entries waiting in this node's spool for a primary"
    );
    describe_gauge!(
        "keysafe_build_info",
        "Always 1; labels carry the version and the git commit the server was built from"
    );
    describe_counter!(
        "keysafe_requests_total",
        "Requests answered, by operation (method and route template) and HTTP status"
    );
    describe_histogram!(
        "keysafe_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's arrival to its answer, by operation and HTTP status"
    );
    describe_counter!(
        "keysafe_tls_handshake_failures_total",
        "TLS handshakes that failed (reason error) or did not finish in time (reason timeout)"
    );
    describe_gauge!(
        "keysafe_tls_certificate_expiry_seconds",
        Unit::Seconds,
        "When the TLS certificate being served expires, in Unix seconds"
    );
    describe_gauge!(
        "keysafe_connections_open",
        "Connections open now (after the TLS handshake started)"
    );
    describe_gauge!(
        "keysafe_connection_sources",
        "Source addresses (an IPv6 address counts by its /64) holding open connections"
    );
    describe_counter!(
        "keysafe_connections_refused_total",
        "Connections closed at once, by reason (per_source: over max_connections_per_address)"
    );
    describe_counter!(
        "keysafe_connections_closed_total",
        "Connections ended, by how they ended (closed, empty, first_byte_timeout, idle_timeout, shutdown, error, forced)"
    );
    describe_counter!(
        "keysafe_audit_anonymous_requests_total",
        "Requests nobody authenticated that changed nothing: recorded in the chain or suppressed (counted in a summary entry)"
    );
    describe_gauge!("keysafe_clients", "Registered clients by state");
    describe_gauge!(
        "keysafe_deposits",
        "Stored deposits (names), deleted ones included"
    );
    describe_gauge!("keysafe_deposit_versions", "Stored deposit versions");
    describe_gauge!(
        "keysafe_sealed",
        "1 while the keyring is sealed and deposits cannot be served, else 0"
    );
    describe_gauge!(
        "keysafe_audit_queue_depth",
        "Audit entries of reads and refusals waiting for their batch"
    );
    describe_gauge!(
        "keysafe_audit_queue_capacity",
        "How many audit entries the queue holds at most"
    );
    describe_counter!(
        "keysafe_audit_failures_total",
        "Audit trail failures by reason: store (a batch append failed), queue_full or stopped (an entry was not queued), file, syslog (a sink failed)"
    );
    describe_gauge!(
        "keysafe_audit_healthy",
        "1 while audit entries are appended, 0 while appending fails"
    );
    describe_gauge!(
        "keysafe_audit_head_seq",
        "Sequence number of the last entry in the audit chain"
    );
    describe_gauge!(
        "keysafe_db_pool_connections",
        "Database read connections by state (idle, busy)"
    );
    describe_gauge!(
        "keysafe_db_up",
        "1 when the database answered this scrape's queries, else 0"
    );
    describe_counter!(
        "keysafe_identity_cache_hits_total",
        "Client identity lookups answered from memory"
    );
    describe_counter!(
        "keysafe_identity_cache_misses_total",
        "Client identity lookups that read the database"
    );
    describe_counter!(
        "keysafe_integrity_failures_total",
        "Authenticated access rows refused because their MAC did not verify (edited in the database)"
    );
    metrics_process::Collector::default().describe();
    // Failure counters exist from the start at zero, so that an alert on their increase sees a
    // series before the first failure rather than none (the audit trail does the same for its
    // own when it starts).
    for reason in ["error", "timeout"] {
        metrics::counter!("keysafe_tls_handshake_failures_total", "reason" => reason).increment(0);
    }
}

/// Sets the gauges read at scrape time and renders the exposition text.
pub async fn render(state: &AppState) -> String {
    let service = &state.service;
    metrics::gauge!(
        "keysafe_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => GIT_COMMIT
    )
    .set(1.0);
    metrics_process::Collector::default().collect();
    metrics::gauge!("keysafe_sealed").set(if service.is_sealed() { 1.0 } else { 0.0 });
    metrics::gauge!("keysafe_audit_queue_depth").set(state.audit.depth() as f64);
    metrics::gauge!("keysafe_audit_queue_capacity").set(state.audit.capacity() as f64);
    metrics::gauge!("keysafe_audit_healthy").set(if state.audit.is_healthy() { 1.0 } else { 0.0 });
    metrics::gauge!("keysafe_audit_head_seq").set(service.store().audit_head().seq as f64);
    metrics::gauge!("keysafe_tls_certificate_expiry_seconds").set(state.tls.not_after() as f64);
    metrics::gauge!("keysafe_connections_open").set(state.connections.active() as f64);
    metrics::gauge!("keysafe_connection_sources").set(state.connections.sources() as f64);
    let (hits, misses) = service.identity_cache_stats();
    metrics::counter!("keysafe_identity_cache_hits_total").absolute(hits);
    metrics::counter!("keysafe_identity_cache_misses_total").absolute(misses);
    metrics::counter!("keysafe_integrity_failures_total").absolute(service.integrity_failures());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The first request of an operation and status records through a new handle, later ones
    /// through the kept one: every request counts, in the series of its own labels.
    #[test]
    fn kept_request_series_count_every_request() {
        let handle = handle().unwrap();
        let t = std::time::Duration::from_micros(300);
        for _ in 0..3 {
            record_request("GET /kept-series-test", "200", t);
        }
        record_request("GET /kept-series-test", "404", t);
        record_request("PUT /kept-series-test", "200", t);
        let text = handle.render();
        for line in [
            "keysafe_requests_total{operation=\"GET /kept-series-test\",status=\"200\"} 3",
            "keysafe_requests_total{operation=\"GET /kept-series-test\",status=\"404\"} 1",
            "keysafe_requests_total{operation=\"PUT /kept-series-test\",status=\"200\"} 1",
            "keysafe_request_duration_seconds_count{operation=\"GET /kept-series-test\",status=\"200\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line} in:\n{text}"
            );
        }
    }
}
