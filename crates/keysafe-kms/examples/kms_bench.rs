//! Gateway load figures for BENCHMARKS.md: generate-EEK and decrypt-EEK through the gateway over
//! keep-alive HTTP/1.1, authenticated by the `hadoop.auth` cookie, at 1, 8 and 64 connections,
//! and the cost of a key-cache miss (`eek`); the same with Kerberos (each connection negotiates
//! SPNEGO once against a throwaway MIT KDC, then uses the cookie, as Hadoop's client does)
//! against pseudo authentication in the same run, and the cost of one SPNEGO negotiation
//! (`kerberos`); 100,000 delegation tokens issued, renewed and cancelled, and what they cost in
//! the keysafe database (`tokens`). Starts its own keysafe server (TestServer) and gateways.
//!
//!   cargo run --release -p keysafe-kms --example kms_bench -- [seconds per run, default 5] [eek] [kerberos] [tokens]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/it/kdc.rs"]
#[allow(dead_code)]
mod kdc;

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

/// Builds a request that carries the given cookie.
type CookieRequest = Arc<dyn Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder + Send + Sync>;

/// Like `drive`, but each connection first negotiates SPNEGO (one `OPTIONS` with a fresh
/// `Negotiate` token from `ccache`) and then sends only the cookie it got, as Hadoop's client
/// does. The negotiation is inside the measured time.
async fn drive_kerberos(
    conns: usize,
    dur: Duration,
    base: String,
    ccache: std::path::PathBuf,
    mk: CookieRequest,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    let t0 = Instant::now();
    for _ in 0..conns {
        let stop = stop.clone();
        let mk = mk.clone();
        let (base, ccache) = (base.clone(), ccache.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .http1_only()
                .build()
                .unwrap();
            let mut lat = Vec::new();
            let t = Instant::now();
            let token = tokio::task::spawn_blocking(move || {
                keysafe_kms::kerberos::SpnegoClient::from_ticket_cache(&ccache)
                    .unwrap()
                    .token(&format!("HTTP/localhost@{REALM}"))
                    .unwrap()
            })
            .await
            .unwrap();
            let r = c
                .request(reqwest::Method::OPTIONS, format!("{base}/keys/names"))
                .header("authorization", format!("Negotiate {token}"))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            let cookie = r.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            lat.push(t.elapsed().as_micros() as u32);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = mk(&c, &cookie).send().await.unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                let _ = r.bytes().await.unwrap();
                lat.push(t.elapsed().as_micros() as u32);
            }
            lat
        }));
    }
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

const REALM: &str = "BENCH.TEST";

/// The keysafe database: its size in bytes once the write-ahead log is checkpointed into it,
/// and its rows of deposits, deposit versions and audit entries.
async fn db_state(ts: &keysafe_testkit::TestServer) -> (u64, i64, i64, i64) {
    let mut c = ts.raw_db().await;
    c.execute_script("PRAGMA wal_checkpoint(TRUNCATE)")
        .await
        .unwrap();
    let mut n = vec![];
    for q in [
        "SELECT count(*) FROM deposits",
        "SELECT count(*) FROM deposit_versions",
        "SELECT count(*) FROM audit_log",
    ] {
        let r = c.scalar(q, &[]).await.unwrap();
        n.push(r.as_int().unwrap());
    }
    let bytes = ts
        .files_at_rest()
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    (bytes, n[0], n[1], n[2])
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let sections: Vec<String> = std::env::args().skip(2).collect();
    let want = |s: &str| sections.is_empty() || sections.iter().any(|x| x == s);
    let dur = Duration::from_secs(secs);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ts = keysafe_testkit::TestServer::start().await;
    let client = ts.new_client("bench").await;
    let cfg = KmsConfig {
        audit_log: None,
        key_admins: "*".into(),
        ..Default::default()
    };
    let mut nocache = cfg.clone();
    nocache.cache.enable = false;
    // As `keysafe kms` runs it: the home's identity without its local deposit cache.
    let gw_client = || Gateway::client_for(&client.home).unwrap();
    let base = start(&client.home, gw_client(), cfg.clone()).await;
    let base_nc = start(&client.home, gw_client(), nocache.clone()).await;
    // For comparison: a client that also writes the home's local deposit cache on every read.
    let base_nc_local = start(&client.home, client.client.clone(), nocache).await;

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

    if want("eek") {
        eek_section(dur, &base, &base_nc, &base_nc_local, &cookie, &dec_body).await;
    }
    if want("kerberos") {
        kerberos_section(dur, &client, &cfg, &base, &cookie, &dec_body).await;
    }
    if want("tokens") {
        tokens_section(&ts, &client, &cfg).await;
    }
}

async fn eek_section(
    dur: Duration,
    base: &str,
    base_nc: &str,
    base_nc_local: &str,
    cookie: &str,
    dec_body: &str,
) {
    let (base, base_nc, base_nc_local) = (
        base.to_owned(),
        base_nc.to_owned(),
        base_nc_local.to_owned(),
    );
    let (cookie, dec_body) = (cookie.to_owned(), dec_body.to_owned());
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
        (
            "current version, cache miss, writing the home's local cache",
            &base_nc_local,
        ),
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

/// Kerberos against pseudo, in one run: generate and decrypt EEK at 8 and 64 connections, each
/// Kerberos connection negotiating once; then the cost of one negotiation.
async fn kerberos_section(
    dur: Duration,
    client: &keysafe_testkit::TestClient,
    cfg: &KmsConfig,
    pseudo: &str,
    pseudo_cookie: &str,
    dec_body: &str,
) {
    let kdc = kdc::Kdc::start(REALM);
    kdc.add(&["HTTP/localhost", "bench"]);
    let service = kdc.keytab("http.keytab", &["HTTP/localhost"]);
    let users = kdc.keytab("users.keytab", &["bench"]);
    let ccache = kdc.kinit("bench", &users, &[&format!("HTTP/localhost@{REALM}")]);
    let mut kcfg = cfg.clone();
    kcfg.auth.kind = keysafe_kms::config::AuthType::Kerberos;
    kcfg.auth.principal = Some(format!("HTTP/localhost@{REALM}"));
    kcfg.auth.keytab = Some(service);
    let krb = start(&client.home, client.client.clone(), kcfg).await;
    println!();
    println!("| op | auth | connections | requests/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let krow = |op: &str, auth: &str, conns: usize, r: &Run| {
        println!(
            "| {op} | {auth} | {conns} | {:.0} | {:.2} | {:.2} | {:.1} |",
            r.n as f64 / r.secs,
            pct(&r.lat, 0.5),
            pct(&r.lat, 0.99),
            pct(&r.lat, 1.0)
        )
    };
    for conns in [8, 64] {
        let (b, c) = (pseudo.to_owned(), pseudo_cookie.to_owned());
        let r = drive(
            conns,
            dur,
            Arc::new(move |h: &reqwest::Client| {
                h.get(format!("{b}/key/bench/_eek?eek_op=generate&num_keys=1"))
                    .header("cookie", &c)
            }),
        )
        .await;
        krow("generate EEK", "pseudo", conns, &r);
        let b = krb.clone();
        let r = drive_kerberos(
            conns,
            dur,
            krb.clone(),
            ccache.clone(),
            Arc::new(move |h: &reqwest::Client, c: &str| {
                h.get(format!("{b}/key/bench/_eek?eek_op=generate&num_keys=1"))
                    .header("cookie", c)
            }),
        )
        .await;
        krow("generate EEK", "kerberos", conns, &r);
        let (b, c, body) = (
            pseudo.to_owned(),
            pseudo_cookie.to_owned(),
            dec_body.to_owned(),
        );
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
        krow("decrypt EEK", "pseudo", conns, &r);
        let (b, body) = (krb.clone(), dec_body.to_owned());
        let r = drive_kerberos(
            conns,
            dur,
            krb.clone(),
            ccache.clone(),
            Arc::new(move |h: &reqwest::Client, c: &str| {
                h.post(format!("{b}/keyversion/bench%400/_eek?eek_op=decrypt"))
                    .header("cookie", c)
                    .header("content-type", "application/json")
                    .body(body.clone())
            }),
        )
        .await;
        krow("decrypt EEK", "kerberos", conns, &r);
    }
    // One negotiation: the client's token (GSSAPI, ticket already in the cache), then the
    // round trip in which the gateway accepts it and answers with a cookie.
    let n = 500;
    let spnego = keysafe_kms::kerberos::SpnegoClient::from_ticket_cache(&ccache).unwrap();
    let h = reqwest::Client::builder().http1_only().build().unwrap();
    let mut token_us = Vec::with_capacity(n);
    let mut round_us = Vec::with_capacity(n);
    let mut cookie_us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let tok = spnego.token(&format!("HTTP/localhost@{REALM}")).unwrap();
        token_us.push(t.elapsed().as_micros() as u32);
        let t = Instant::now();
        let r = h
            .request(reqwest::Method::OPTIONS, format!("{krb}/keys/names"))
            .header("authorization", format!("Negotiate {tok}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        round_us.push(t.elapsed().as_micros() as u32);
        let t = Instant::now();
        let r = h
            .request(reqwest::Method::OPTIONS, format!("{krb}/keys/names"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        cookie_us.push(t.elapsed().as_micros() as u32);
    }
    for v in [&mut token_us, &mut round_us, &mut cookie_us] {
        v.sort_unstable();
    }
    println!();
    println!("| one request, sequential, {n} times | p50 ms | p99 ms |");
    println!("|---|---:|---:|");
    for (label, v) in [
        ("client: make the SPNEGO token (ticket cached)", &token_us),
        (
            "gateway: OPTIONS with Negotiate (accept, map, cookie)",
            &round_us,
        ),
        ("gateway: OPTIONS with the cookie", &cookie_us),
    ] {
        println!("| {label} | {:.3} | {:.3} |", pct(v, 0.5), pct(v, 0.99));
    }
    drop(kdc);
}

/// 100,000 delegation tokens through the gateway (8 connections), then 1,000 renewals and
/// 1,000 cancellations, with the keysafe database size after each step.
async fn tokens_section(
    ts: &keysafe_testkit::TestServer,
    client: &keysafe_testkit::TestClient,
    cfg: &KmsConfig,
) {
    let mut tcfg = cfg.clone();
    tcfg.delegation_token.max_per_user_per_hour = u32::MAX;
    let base = start(&client.home, client.client.clone(), tcfg).await;
    let before = db_state(ts).await;
    let total = 100_000usize;
    let conns = 8;
    let issued = Arc::new(std::sync::Mutex::new(Vec::<String>::with_capacity(2000)));
    let t0 = Instant::now();
    let mut tasks = vec![];
    for _ in 0..conns {
        let (b, issued) = (base.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::builder().http1_only().build().unwrap();
            for i in 0..total / conns {
                let r = c
                    .get(format!(
                        "{b}/?op=GETDELEGATIONTOKEN&renewer=bench&user.name=bench"
                    ))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                let v: serde_json::Value = r.json().await.unwrap();
                if i < 250 {
                    issued
                        .lock()
                        .unwrap()
                        .push(v["Token"]["urlString"].as_str().unwrap().to_owned());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let after_issue = db_state(ts).await;
    let toks = issued.lock().unwrap().clone();
    let c = reqwest::Client::builder().http1_only().build().unwrap();
    let t1 = Instant::now();
    for t in &toks[..1000.min(toks.len())] {
        let r = c
            .put(format!(
                "{base}/?op=RENEWDELEGATIONTOKEN&token={t}&user.name=bench"
            ))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let renew_secs = t1.elapsed().as_secs_f64();
    let after_renew = db_state(ts).await;
    let t2 = Instant::now();
    for t in &toks[..1000.min(toks.len())] {
        let r = c
            .put(format!("{base}/?op=CANCELDELEGATIONTOKEN&token={t}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let cancel_secs = t2.elapsed().as_secs_f64();
    let after_cancel = db_state(ts).await;
    // The sweep, as if a renew interval had passed.
    let pruner = keysafe_kms::delegation::DtManager::shared(
        std::sync::Arc::new(
            keysafe_kms::deposits::DepositBackend::open(
                &client.home,
                client.client.clone(),
                "kms",
                None,
            )
            .await
            .unwrap(),
        ),
        keysafe_kms::config::DtConfig {
            renew_interval: Duration::ZERO,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let t3 = Instant::now();
    let pruned = pruner.prune().await.unwrap();
    let prune_secs = t3.elapsed().as_secs_f64();
    let after_prune = db_state(ts).await;
    let n = 1000.min(toks.len());
    println!();
    println!(
        "| step | count | per second | database (MB, checkpointed) | deposits | versions | audit entries |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mb = |b: u64| b as f64 / 1_048_576.0;
    let line = |step: &str, count: String, rate: String, s: (u64, i64, i64, i64)| {
        println!(
            "| {step} | {count} | {rate} | {:.2} | {} | {} | {} |",
            mb(s.0),
            s.1,
            s.2,
            s.3
        )
    };
    line("before", String::new(), String::new(), before);
    line(
        "issue tokens (8 connections)",
        total.to_string(),
        format!("{:.0}", total as f64 / secs),
        after_issue,
    );
    line(
        "renew (sequential)",
        n.to_string(),
        format!("{:.0}", n as f64 / renew_secs),
        after_renew,
    );
    line(
        "cancel the same tokens (sequential)",
        n.to_string(),
        format!("{:.0}", n as f64 / cancel_secs),
        after_cancel,
    );
    line(
        "prune the records",
        pruned.to_string(),
        format!("{:.0}", pruned as f64 / prune_secs),
        after_prune,
    );
}
