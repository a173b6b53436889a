//! `keysafe cache ls|clear`: the local cache of fetched deposits (see keysafe_client::cache).
//! Works without any server.

use crate::cli::{CacheCommand, ClientArgs};
use crate::output;
use keysafe_client::{Cache, ClientHome};

fn open(args: &ClientArgs) -> anyhow::Result<(ClientHome, Cache)> {
    let dir = ClientHome::resolve_dir(args.home.as_deref())?;
    let home = ClientHome::load(&dir)?;
    // Even when the cache is disabled, ls and clear see what an earlier setting left behind.
    let cache = Cache::new(&home.dir, &home.config.servers, home.cache_config());
    Ok((home, cache))
}

pub async fn run(cmd: CacheCommand) -> anyhow::Result<()> {
    match cmd {
        CacheCommand::Ls(args) => {
            let (_, cache) = open(&args)?;
            let entries = cache.entries()?;
            if args.json {
                return output::json(&serde_json::json!({ "entries": entries }));
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    vec![
                        e.name.clone(),
                        e.requested
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "current".into()),
                        e.version.to_string(),
                        e.size.to_string(),
                        humantime::format_duration(std::time::Duration::from_secs(e.age_s))
                            .to_string(),
                        e.encoding.clone().unwrap_or_else(|| "-".into()),
                        if e.current_servers {
                            String::new()
                        } else {
                            "other servers".into()
                        },
                    ]
                })
                .collect();
            output::table(
                &[
                    "NAME",
                    "REQUESTED",
                    "VERSION",
                    "CACHED BYTES",
                    "AGE",
                    "ENCODING",
                    "NOTE",
                ],
                &rows,
            );
            Ok(())
        }
        CacheCommand::Clear(args) => {
            let (_, cache) = open(&args)?;
            let n = cache.clear()?;
            if args.json {
                return output::json(&serde_json::json!({ "removed": n }));
            }
            println!(
                "Removed {n} cached deposit versions from {}.",
                cache.dir().display()
            );
            Ok(())
        }
    }
}
