//! Gateway load figures for BENCHMARKS.md: generate-EEK and decrypt-EEK through the gateway over
//! keep-alive HTTP/1.1, authenticated by the `hadoop.auth` cookie, at 1, 8 and 64 connections,
//! and the cost of a key-cache miss. Starts its own keysafe server (TestServer) and gateway.
//!
//!   cargo run --release -p keysafe-kms --example kms_bench -- [seconds per run, default 5]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keysafe_kms::{Gateway, KmsConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Run {
    n: usize,
    secs: f64,
    lat: Vec<u32>,
}

fn pct(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    f64::from(v[i]) / 1000.0
}

async fn drive(
    conns: usize,
    dur: Duration,
    mk: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    for _ in 0..conns {
        let stop = stop.clone();
        let mk = mk.clone();
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .http1_only()
                .build()
                .unwrap();
            // Warm-up: open the connection.
            let _ = mk(&c).send().await.unwrap().bytes().await;
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = mk(&c).send().await.unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                let _ = r.bytes().await.unwrap();
                lat.push(t.elapsed().as_micros() as u32);
            }
            lat
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = vec![];
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_unstable();
    Run {
        n: lat.len(),
        secs,
        lat,
    }
}

fn row(op: &str, conns: usize, r: &Run) {
    println!(
        "| {op} | {conns} | {:.0} | {:.2} | {:.2} | {:.1} |",
        r.n as f64 / r.secs,
        pct(&r.lat, 0.5),
        pct(&r.lat, 0.99),
        pct(&r.lat, 1.0)
    );
}

async fn start(
    home: &keysafe_client::ClientHome,
    client: keysafe_client::KeysafeClient,
    cfg: KmsConfig,
) -> String {
    let gw = Gateway::new(home, client, &cfg).await.unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(keysafe_kms::server::serve(l, gw, std::future::pending()));
    format!("http://{a}/kms/v1")
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dur = Duration::from_secs(secs);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ts = keysafe_testkit::TestServer::start().await;
    let client = ts.new_client("bench").await;
    let cfg = KmsConfig {
        audit_log: None,
        ..Default::default()
    };
    let base = start(&client.home, client.client.clone(), cfg.clone()).await;
    let mut nocache = cfg.clone();
    nocache.cache.enable = false;
    let base_nc = start(&client.home, client.client.clone(), nocache).await;

    let h = reqwest::Client::new();
    let r = h
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/keys/names?user.name=bench"),
        )
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = h
        .post(format!("{base}/keys"))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body(r#"{"name":"bench","cipher":"AES/CTR/NoPadding","length":256}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let eek: serde_json::Value = h
        .get(format!("{base}/key/bench/_eek?eek_op=generate&num_keys=1"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let e = &eek[0];
    let dec_body = serde_json::json!({"name":"bench","iv":e["iv"],"material":e["encryptedKeyVersion"]["material"]}).to_string();

    println!("| op | connections | requests/s | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for conns in [1, 8, 64] {
        let (b, c) = (base.clone(), cookie.clone());
        let r = drive(
            conns,
            dur,
            Arc::new(move |h: &reqwest::Client| {
                h.get(format!("{b}/key/bench/_eek?eek_op=generate&num_keys=1"))
                    .header("cookie", &c)
                    .header("content-type", "application/json")
            }),
        )
        .await;
        row("generate EEK (num_keys=1)", conns, &r);
    }
    for conns in [1, 8, 64] {
        let (b, c, body) = (base.clone(), cookie.clone(), dec_body.clone());
        let r = drive(
            conns,
            dur,
            Arc::new(move |h: &reqwest::Client| {
                h.post(format!("{b}/keyversion/bench%400/_eek?eek_op=decrypt"))
                    .header("cookie", &c)
                    .header("content-type", "application/json")
                    .body(body.clone())
            }),
        )
        .await;
        row("decrypt EEK", conns, &r);
    }
    // Cache miss: _currentversion with the caches on (hits) and off (every call reads keysafe).
    for (label, b) in [
        ("current version, cache hit", &base),
        ("current version, cache miss", &base_nc),
    ] {
        let (b, c) = (b.clone(), cookie.clone());
        let r = drive(
            1,
            dur,
            Arc::new(move |h: &reqwest::Client| {
                h.get(format!("{b}/key/bench/_currentversion"))
                    .header("cookie", &c)
            }),
        )
        .await;
        row(label, 1, &r);
    }
    {
        let (b, c, body) = (base_nc.clone(), cookie.clone(), dec_body.clone());
        let r = drive(
            8,
            dur,
            Arc::new(move |h: &reqwest::Client| {
                h.post(format!("{b}/keyversion/bench%400/_eek?eek_op=decrypt"))
                    .header("cookie", &c)
                    .header("content-type", "application/json")
                    .body(body.clone())
            }),
        )
        .await;
        row("decrypt EEK, caches off", 8, &r);
    }
}
