//! `keysafe status`: every configured server (does it answer, how fast, its health, does its key
//! match the pin), the one requests would go to, the local cache, and this client's identity.
//! Exits 6 when no server answers healthy (after printing the report).

use crate::cli::ClientArgs;
use crate::cmd::client_for;
use crate::output;
use keysafe_client::ClientError;
use keysafe_client::cache::CacheStats;
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Status {
    client: ClientSummary,
    servers: Vec<keysafe_client::ServerStatus>,
    /// The server the next request would go to (the first healthy one), if any.
    using: Option<String>,
    cache: CacheSummary,
}

#[derive(Debug, Serialize)]
struct ClientSummary {
    fingerprint: String,
    org: String,
    name: Option<String>,
    home: String,
}

#[derive(Debug, Serialize)]
struct CacheSummary {
    enabled: bool,
    dir: String,
    /// `revalidate` (every get asks a server) or `ttl`.
    mode: &'static str,
    /// `ttl` mode only: how long a copy answers without asking.
    ttl_s: u64,
    max_stale_s: u64,
    #[serde(flatten)]
    stats: CacheStats,
}

pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let (home, client) = client_for(&args)?;
    let servers = client.probe().await;
    let healthy = servers
        .iter()
        .any(|s| s.answers && s.health.as_deref() == Some("ok"));
    let using = healthy.then(|| client.preferred_server());
    let config = home.cache_config();
    let cache_dir = home.dir.join(keysafe_client::cache::CACHE_DIR);
    let stats = keysafe_client::Cache::new(&home.dir, &home.config.servers, config).stats()?;
    let status = Status {
        client: ClientSummary {
            fingerprint: home.config.fingerprint.as_str().to_owned(),
            org: home.config.org.as_str().to_owned(),
            name: home.config.name.clone(),
            home: home.dir.display().to_string(),
        },
        servers,
        using,
        cache: CacheSummary {
            enabled: config.enabled,
            dir: cache_dir.display().to_string(),
            mode: config.mode.as_str(),
            ttl_s: config.ttl.as_secs(),
            max_stale_s: config.max_stale.as_secs(),
            stats,
        },
    };
    if args.json {
        output::json(&status)?;
    } else {
        print_human(&status);
    }
    if status.using.is_none() {
        return Err(ClientError::AllServersFailed {
            tried: status
                .servers
                .iter()
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.url,
                        s.error
                            .clone()
                            .or_else(|| s.health.clone())
                            .unwrap_or_default()
                    )
                })
                .collect(),
            last: Box::new(ClientError::Connect {
                url: status
                    .servers
                    .last()
                    .map(|s| s.url.clone())
                    .unwrap_or_default(),
                reason: "no healthy server".into(),
            }),
            not_retried: false,
        }
        .into());
    }
    Ok(())
}

fn print_human(s: &Status) {
    println!("client       {}", s.client.fingerprint);
    println!("organisation {}", s.client.org);
    if let Some(n) = &s.client.name {
        println!("name         {n}");
    }
    println!("home         {}", s.client.home);
    println!();
    let rows: Vec<Vec<String>> = s
        .servers
        .iter()
        .map(|v| {
            let fp = match (v.fingerprint_matches, &v.pinned) {
                (Some(true), _) => "matches pin".to_owned(),
                (Some(false), _) => format!(
                    "MISMATCH: presents {}",
                    v.presented.as_deref().unwrap_or("?")
                ),
                (None, Some(_)) => "pinned (not seen)".to_owned(),
                (None, None) => "CA-verified".to_owned(),
            };
            vec![
                if s.using.as_deref() == Some(v.url.as_str()) {
                    "*".to_owned()
                } else {
                    String::new()
                },
                v.url.clone(),
                if v.answers { "yes" } else { "no" }.to_owned(),
                v.health
                    .clone()
                    .or_else(|| v.error.as_deref().map(short_reason))
                    .unwrap_or_default(),
                v.latency_ms
                    .map(|l| format!("{l:.1} ms"))
                    .unwrap_or_else(|| "-".into()),
                fp,
            ]
        })
        .collect();
    output::table(
        &[
            "USE",
            "SERVER",
            "ANSWERS",
            "HEALTH",
            "LATENCY",
            "FINGERPRINT",
        ],
        &rows,
    );
    println!();
    match &s.using {
        Some(u) => println!("using        {u}"),
        None => println!("using        none: no server answers healthy"),
    }
    let c = &s.cache;
    if c.enabled {
        let mode = if c.mode == "ttl" {
            format!(
                "ttl {}",
                humantime::format_duration(std::time::Duration::from_secs(c.ttl_s))
            )
        } else {
            "revalidated on every get".to_owned()
        };
        println!(
            "cache        {} entries, {} bytes (payloads as served), oldest confirmed {} ago ({mode}, max-stale {}) in {}",
            c.stats.entries,
            c.stats.bytes,
            c.stats
                .oldest_age_s
                .map(|a| humantime::format_duration(std::time::Duration::from_secs(a)).to_string())
                .unwrap_or_else(|| "-".into()),
            humantime::format_duration(std::time::Duration::from_secs(c.max_stale_s)),
            c.dir
        );
    } else {
        println!(
            "cache        disabled ({} entries left in {})",
            c.stats.entries, c.dir
        );
    }
}

/// The innermost cause of an error chain (`Connection refused (os error 111)`), for the table;
/// `--json` has the whole chain.
fn short_reason(e: &str) -> String {
    e.rsplit(": ").next().unwrap_or(e).to_owned()
}
