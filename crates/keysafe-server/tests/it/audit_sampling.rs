//! A caller without credentials cannot grow the audit chain at its request rate: its requests
//! are counted, sampled, and summarised; authenticated requests keep one entry each.

use futures_util::StreamExt;
use keysafe_client::reqwest::Method;
use keysafe_testkit::TestServer;
use std::time::Duration;

fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn ten_thousand_anonymous_requests_add_a_bounded_number_of_entries() {
    let ts = TestServer::start_with(|c| {
        c.audit.anonymous.interval = Duration::from_secs(3600);
        c.audit.anonymous.per_source = 5;
        c.audit.anonymous.total = 100;
    })
    .await;
    let c = ts.new_client("acme").await;
    ts.app.state.audit.flush(Duration::from_secs(30)).await;
    let before = ts.service().store().audit_head().seq;
    let suppressed_before = counter(
        &keysafe_server::metrics::render(&ts.app.state).await,
        "keysafe_audit_anonymous_requests_total{disposition=\"suppressed\"}",
    );

    let anon = ts.anonymous_client();
    let (_d, stranger) = ts.unregistered_client();
    const N: usize = 10_000;
    let done = futures_util::stream::iter(0..N)
        .map(|i| {
            let (who, method, path) = match i % 4 {
                0 => (&anon, Method::GET, format!("/garbage/{i}")),
                1 => (&anon, Method::GET, "/v1/whoami".to_owned()),
                2 => (&stranger, Method::GET, "/v1/deposits".to_owned()),
                _ => (&anon, Method::POST, "/v1/register".to_owned()),
            };
            async move {
                let r = who.raw_request(method, &path).send().await.unwrap();
                assert!(r.status().is_client_error(), "{path}: {}", r.status());
            }
        })
        .buffer_unordered(16)
        .count()
        .await;
    assert_eq!(done, N);

    // Authenticated requests are still recorded one entry each.
    for _ in 0..20 {
        c.client.whoami().await.unwrap();
    }
    let text = keysafe_server::metrics::render(&ts.app.state).await;
    let suppressed = counter(
        &text,
        "keysafe_audit_anonymous_requests_total{disposition=\"suppressed\"}",
    ) - suppressed_before;
    assert!(
        suppressed >= (N - 5) as f64,
        "the metric counts every request left out: {suppressed}"
    );

    // Stopping the server closes the interval: its summary reaches the chain.
    let service = ts.service().clone();
    ts.stop().await;
    let entries = service
        .store()
        .audit_entries(before + 1, None, 100_000)
        .await
        .unwrap();
    let anonymous: Vec<_> = entries.iter().filter(|e| e.event.org.is_none()).collect();
    let whoami = entries
        .iter()
        .filter(|e| e.event.operation == "GET /v1/whoami" && e.event.org.is_some())
        .count();
    assert_eq!(whoami, 20, "every authenticated request has its entry");
    assert!(
        anonymous.len() <= 5 + 1,
        "{} chained entries for {N} anonymous requests",
        anonymous.len()
    );
    let summary = anonymous
        .iter()
        .find(|e| e.event.operation == "ANONYMOUS SUMMARY")
        .expect("a summary entry");
    let n: u64 = summary
        .event
        .target
        .strip_prefix("suppressed=")
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(n >= (N - 5) as u64, "{}", summary.event.target);
    assert_eq!(summary.event.outcome, "suppressed");
}
