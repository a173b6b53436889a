//! `keysafe bench`: a load generator built on the client library, so it measures the path real
//! clients take (mutual TLS, keep-alive, the server pinned). N tasks each hold one connection and
//! issue requests back to back for a fixed time after a warm-up; it reports throughput, latency
//! percentiles and errors. A measurement, not a test.

use crate::cli::{BenchArgs, BenchOp};
use crate::output;
use crate::progress::Progress;
use bytes::Bytes;
use keysafe_client::client::{ClientOptions, FailoverOptions};
use keysafe_client::{ClientHome, KeysafeClient, Precondition};
use keysafe_proto::DepositName;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub op: &'static str,
    pub connections: usize,
    pub duration_s: f64,
    pub size: usize,
    pub requests: u64,
    pub errors: u64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The first error seen, if any, to tell what went wrong.
    pub first_error: Option<String>,
}

fn key(i: usize) -> anyhow::Result<DepositName> {
    Ok(DepositName::parse(&format!("bench/key-{i:06}"))?)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections >= 1, "--connections must be at least 1");
    anyhow::ensure!(args.keys >= 1, "--keys must be at least 1");
    let dir = ClientHome::resolve_dir(args.home.as_deref())?;
    let home = ClientHome::load(&dir)?;
    let options = ClientOptions {
        pool_max_idle_per_host: 1,
        use_cache: false,
        failover: FailoverOptions {
            retries: 0,
            ..FailoverOptions::default()
        },
        ..ClientOptions::default()
    };
    let payload = Bytes::from(vec![0x5au8; args.size]);
    if args.op == BenchOp::Seed {
        return seed(&args, &home, &options, payload).await;
    }

    // Seed every key once so gets find something, using a few connections. The load generator
    // measures the server: no local cache, no retries.
    let seeder = KeysafeClient::from_home_with(
        &home,
        &ClientOptions {
            use_cache: false,
            ..ClientOptions::default()
        },
    )?;
    let seeding = Progress::bar(args.keys as u64, "seeding keys");
    let mut seeded = 0usize;
    while seeded < args.keys {
        let batch: Vec<_> = (seeded..(seeded + 32).min(args.keys))
            .map(|i| {
                let c = seeder.clone();
                let p = payload.clone();
                async move {
                    c.put(&key(i)?, p, Precondition::None)
                        .await
                        .map_err(anyhow::Error::from)
                }
            })
            .collect();
        for r in futures_util::future::join_all(batch).await {
            r?;
        }
        seeded = (seeded + 32).min(args.keys);
        seeding.set_position(seeded as u64);
    }
    seeding.clear();
    let timer = Progress::timer(args.warmup + args.duration, "warm-up and measurement");

    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + args.warmup;
    let until = measure_from + args.duration;
    let mut tasks = Vec::with_capacity(args.connections);
    for t in 0..args.connections {
        let client = KeysafeClient::from_home_with(&home, &options)?;
        let payload = payload.clone();
        let op = args.op;
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut first_error = None;
            let mut n = t.wrapping_mul(7919);
            tokio::time::sleep_until(start.into()).await;
            loop {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                n = n.wrapping_add(1);
                let Ok(name) = key(n % keys) else { break };
                let r = match op {
                    BenchOp::Get => client.get(&name, None).await.map(|_| ()),
                    BenchOp::Put => client
                        .put(&name, payload.clone(), Precondition::None)
                        .await
                        .map(|_| ()),
                    BenchOp::Baseline | BenchOp::Seed => {
                        client.server_fingerprint().await.map(|_| ())
                    }
                };
                if now >= measure_from {
                    let micros = u32::try_from(now.elapsed().as_micros()).unwrap_or(u32::MAX);
                    match r {
                        Ok(()) => lat.push(micros),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let ticker = {
        let timer = timer.clone();
        tokio::spawn(async move {
            loop {
                let now = Instant::now();
                timer.set_position(now.saturating_duration_since(start).as_millis() as u64);
                if now >= until {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut all: Vec<u32> = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (lat, e, fe) = t.await?;
        all.extend(lat);
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    ticker.abort();
    timer.clear();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let idx = ((all.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all[idx.min(all.len() - 1)]) / 1000.0
    };
    let secs = args.duration.as_secs_f64();
    let report = BenchReport {
        op: match args.op {
            BenchOp::Get => "get",
            BenchOp::Put => "put",
            BenchOp::Baseline => "baseline",
            BenchOp::Seed => "seed",
        },
        connections: args.connections,
        duration_s: secs,
        size: args.size,
        requests: all.len() as u64,
        errors,
        throughput_per_s: all.len() as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: all.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
        first_error,
    };
    if args.json {
        return output::json(&report);
    }
    println!(
        "op={} connections={} duration={}s size={}B",
        report.op, report.connections, report.duration_s, report.size
    );
    println!(
        "requests={} throughput={:.0}/s errors={}",
        report.requests, report.throughput_per_s, report.errors
    );
    println!(
        "latency p50={:.2}ms p99={:.2}ms max={:.2}ms",
        report.p50_ms, report.p99_ms, report.max_ms
    );
    if let Some(e) = &report.first_error {
        println!("first error: {e}");
    }
    Ok(())
}

/// What `--op seed` did.
#[derive(Debug, Serialize)]
pub struct SeedReport {
    pub keys: usize,
    /// Deposits stored by this run.
    pub stored: u64,
    /// Deposits that existed already (an earlier run stored them).
    pub existing: u64,
    pub connections: usize,
    pub seconds: f64,
    pub per_second: f64,
}

/// Stores version 1 of every key `0..keys` that is not there yet, `connections` requests at a
/// time, each connection taking the next index: many concurrent durable puts through the real
/// server (each group-committed with its audit entry), so a million deposits take minutes.
async fn seed(
    args: &BenchArgs,
    home: &ClientHome,
    options: &ClientOptions,
    payload: Bytes,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    let next = Arc::new(AtomicUsize::new(0));
    let stored = Arc::new(AtomicU64::new(0));
    let existing = Arc::new(AtomicU64::new(0));
    let bar = Progress::bar(args.keys as u64, "seeding keys");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let client = KeysafeClient::from_home_with(home, options)?;
        let (next, stored, existing) = (next.clone(), stored.clone(), existing.clone());
        let (payload, keys, bar) = (payload.clone(), args.keys, bar.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return anyhow::Ok(());
                }
                match client
                    .put(&key(i)?, payload.clone(), Precondition::IfAbsent)
                    .await
                {
                    Ok(_) => stored.fetch_add(1, Ordering::Relaxed),
                    Err(e) if e.code() == Some(keysafe_proto::ErrorCode::VersionConflict) => {
                        existing.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        return Err(anyhow::Error::from(e).context(format!("seeding key {i}")));
                    }
                };
                if i % 1000 == 0 {
                    bar.set_position(i as u64);
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    bar.clear();
    let seconds = started.elapsed().as_secs_f64();
    let report = SeedReport {
        keys: args.keys,
        stored: stored.load(Ordering::Relaxed),
        existing: existing.load(Ordering::Relaxed),
        connections: args.connections,
        seconds,
        per_second: stored.load(Ordering::Relaxed) as f64 / seconds.max(1e-9),
    };
    if args.json {
        return output::json(&report);
    }
    println!(
        "seeded {} deposits ({} there already) over {} connections in {:.1}s: {:.0}/s",
        report.stored, report.existing, report.connections, report.seconds, report.per_second
    );
    Ok(())
}
