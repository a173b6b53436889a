//! `keysafe volume acl add|list|rm|mode`: edit a volume's process access rules. Every change
//! fetches the volume's key from keysafe, verifies the current rule file with it (a tampered
//! file is refused, not silently replaced) and writes the new rules with a fresh MAC; a mounted
//! volume picks the change up on its next covered operation.

use super::{AclAddArgs, AclCommand, TableArgs, home_and_client, table_of, verr};
use crate::cmd::vault_for;
use crate::exit::usage;
use crate::output;
use keysafe_volume::format::Password;
use keysafe_volume::keys::{self, KeyRef};
use keysafe_volume::manage;
use keysafe_volume::procinfo;
use keysafe_volume::rules::{Mode, Rule, RuleSet, RulesKey, normalize_prefix};
use keysafe_volume::table::{VolumeEntry, canonical};
use std::path::{Path, PathBuf};

struct Loaded {
    entry: VolumeEntry,
    path: PathBuf,
    key: RulesKey,
    set: RuleSet,
}

async fn load(target: &str, t: &TableArgs) -> anyhow::Result<Loaded> {
    let (home, client) = home_and_client(t)?;
    let table = table_of(&home, t);
    let entry = table.find(target).map_err(verr)?;
    let vault = vault_for(&home, client)?;
    let fetched = keys::fetch_key(
        &vault,
        &KeyRef {
            deposit: entry.key_deposit().map_err(verr)?,
            owner: entry.key_owner.clone(),
        },
    )
    .await
    .map_err(verr)?;
    super::warn_stale(&format!("volume {}", entry.name), &fetched.source);
    let key = RulesKey::derive(
        &Password::from_bytes(fetched.secret.to_vec()),
        entry.name.as_str(),
    )
    .map_err(verr)?;
    table.ensure_volumes_dir().map_err(verr)?;
    let path = manage::rules_path(&table, &entry.name);
    let set = RuleSet::load(&path, &key, entry.name.as_str())
        .map_err(verr)?
        .unwrap_or_else(|| RuleSet::new(entry.name.as_str()));
    Ok(Loaded {
        entry,
        path,
        key,
        set,
    })
}

/// `--allow`: a path inside the volume, or a path under its mount point.
fn prefix_of(allow: &str, entry: &VolumeEntry) -> anyhow::Result<String> {
    if let Some(mp) = &entry.mountpoint {
        let p = canonical(Path::new(allow));
        if let Ok(rest) = p.strip_prefix(mp) {
            return normalize_prefix(&format!("/{}", rest.display())).map_err(verr);
        }
    }
    normalize_prefix(allow).map_err(verr)
}

fn print_rules(set: &RuleSet, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(set);
    }
    println!("mode: {} (serial {})", set.mode.as_str(), set.serial);
    let rows: Vec<Vec<String>> = set
        .rules
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.prefix.clone(),
                r.exe.clone(),
                r.sha256.clone().unwrap_or_else(|| "-".into()),
                r.script.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::table(&["ID", "PATH", "EXECUTABLE", "SHA-256", "SCRIPT"], &rows);
    Ok(())
}

async fn add(a: AclAddArgs) -> anyhow::Result<()> {
    let mut l = load(&a.target, &a.table).await?;
    let prefix = prefix_of(&a.allow, &l.entry)?;
    if !a.exe.is_absolute() {
        return Err(usage("--exe must be an absolute path"));
    }
    // /proc/PID/exe shows the resolved path, so that is what a rule must name.
    let exe = a
        .exe
        .canonicalize()
        .map_err(|e| usage(format!("executable {}: {e}", a.exe.display())))?;
    let sha256 = match a.sha256.as_deref() {
        None => None,
        Some("auto") => {
            Some(hex::encode(procinfo::sha256_file(&exe).map_err(|e| {
                usage(format!("cannot hash {}: {e}", exe.display()))
            })?))
        }
        Some(h) if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(h.to_ascii_lowercase())
        }
        Some(_) => return Err(usage("--sha256 takes `auto` or 64 hex digits")),
    };
    let script = match &a.script {
        None => None,
        Some(s) => {
            if !s.is_absolute() {
                return Err(usage("--script must be an absolute path"));
            }
            Some(procinfo::normalize(s).display().to_string())
        }
    };
    let rule = Rule {
        id: 0,
        prefix,
        exe: exe.display().to_string(),
        sha256,
        script,
    };
    let id = l.set.add(rule);
    l.set.save(&l.path, &l.key).map_err(verr)?;
    if a.table.client.json {
        return output::json(&l.set);
    }
    println!("Added rule {id} to volume {}.", l.entry.name);
    print_rules(&l.set, false)
}

pub async fn run(c: AclCommand) -> anyhow::Result<()> {
    match c {
        AclCommand::Add(a) => add(a).await,
        AclCommand::List(a) => {
            let l = load(&a.target, &a.table).await?;
            print_rules(&l.set, a.table.client.json)
        }
        AclCommand::Rm(a) => {
            let mut l = load(&a.target, &a.table).await?;
            let r = l.set.remove(a.id).map_err(verr)?;
            l.set.save(&l.path, &l.key).map_err(verr)?;
            if a.table.client.json {
                return output::json(&l.set);
            }
            println!(
                "Removed rule {} ({} -> {}) from volume {}.",
                r.id, r.prefix, r.exe, l.entry.name
            );
            Ok(())
        }
        AclCommand::Mode(a) => {
            let mode = Mode::parse(&a.mode).map_err(verr)?;
            let mut l = load(&a.target, &a.table).await?;
            l.set.set_mode(mode);
            l.set.save(&l.path, &l.key).map_err(verr)?;
            if a.table.client.json {
                return output::json(&l.set);
            }
            println!("Volume {} is in {} mode.", l.entry.name, mode.as_str());
            Ok(())
        }
    }
}
