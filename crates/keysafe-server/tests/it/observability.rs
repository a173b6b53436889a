//! What operators read: every metric family has `# HELP`, a build-info series names the version
//! and commit, and process metrics are exported.

use keysafe_client::Precondition;
use keysafe_proto::DepositName;
use keysafe_testkit::TestServer;
use std::collections::BTreeSet;

fn value(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{']))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn every_metric_family_has_help_and_build_and_process_metrics_are_exported() {
    let ts = TestServer::start().await;
    let c = ts.new_client("acme").await;
    let n = DepositName::parse("k").unwrap();
    c.client
        .put(&n, b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    c.client.get(&n, None).await.unwrap();
    let text = keysafe_server::metrics::render(&ts.app.state).await;

    let families = |prefix: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    };
    let typed = families("# TYPE ");
    let helped = families("# HELP ");
    assert!(typed.len() > 15, "{typed:?}");
    let missing: Vec<_> = typed.difference(&helped).collect();
    assert!(missing.is_empty(), "families without # HELP: {missing:?}");
    for l in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(l.split(' ').count() > 3, "an empty HELP: {l}");
    }

    // Build information: always 1, with the version and the commit.
    let line = text
        .lines()
        .find(|l| l.starts_with("keysafe_build_info{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.ends_with(" 1"), "{line}");
    assert!(
        line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    let commit = keysafe_server::metrics::GIT_COMMIT;
    assert!(line.contains(&format!("commit=\"{commit}\"")), "{line}");
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    let in_checkout = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .is_ok_and(|o| o.status.success());
    if in_checkout {
        assert_ne!(commit, "unknown", "built from a git checkout");
    }

    // Process metrics, read from /proc.
    assert!(value(&text, "process_resident_memory_bytes") > 1_000_000.0);
    assert!(value(&text, "process_open_fds") >= 3.0);
    assert!(value(&text, "process_max_fds") >= value(&text, "process_open_fds"));
    let start = value(&text, "process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start > now - 86400.0 && start <= now + 1.0,
        "{start} vs {now}"
    );
    // Whole seconds (a counter): present, not yet necessarily above zero in a short test.
    assert!(value(&text, "process_cpu_seconds_total") >= 0.0);
    assert!(value(&text, "process_threads") >= 2.0);
}

#[tokio::test]
async fn the_example_alert_rules_name_only_series_keysafe_exports() {
    let ts = TestServer::start().await;
    ts.anonymous_client().health().await.unwrap();
    let text = keysafe_server::metrics::render(&ts.app.state).await;
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/prometheus-alerts.yml"
    ))
    .unwrap();
    let mut named = BTreeSet::new();
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(i) = rest.find("keysafe_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            named.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    for alert in [
        "KeysafeSealed",
        "KeysafeAuditFailing",
        "KeysafeCertificateExpiresSoon",
        "KeysafeIntegrityFailure",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
    // Exported only where a database primary reports standbys: the CLI's cluster_failover test
    // reads them from a node over a real pg_auto_failover standby.
    const REPLICATION_SERIES: [&str; 3] = [
        "keysafe_database_replicas",
        "keysafe_database_replica_lag_bytes",
        "keysafe_database_replica_replay_lag_seconds",
    ];
    for series in REPLICATION_SERIES {
        assert!(named.contains(series), "{series} has no alert rule");
    }
    assert!(named.len() >= 6, "{named:?}");
    let unknown: Vec<_> = named
        .difference(&exported)
        .filter(|s| !REPLICATION_SERIES.contains(&s.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "alert rules name series keysafe does not export: {unknown:?}"
    );
}
