//! `keysafe volume status [--integrity]`: every volume of the table with its key deposit, where
//! it is mounted and by which process, its rules and mode. `--integrity` checks each volume
//! against keysafe itself: the key deposit is there (asked of a server, not the cache) and opens
//! the volume's configuration, the mount point exists, a mount of that name is of this volume,
//! and the rule file verifies.

use super::{StatusArgs, home_and_client, table_of, verr};
use crate::cmd::vault_for;
use crate::output;
use keysafe_client::CacheUse;
use keysafe_volume::format::{Password, VolumeConfig};
use keysafe_volume::manage;
use keysafe_volume::mounts::{self, RunState};
use keysafe_volume::rules::{Rule, RuleSet, RulesKey};
use keysafe_volume::table::VolumeEntry;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Serialize)]
struct Integrity {
    ok: bool,
    /// The key deposit answered from a server.
    key_in_keysafe: bool,
    /// The key unwraps the master key in gocryptfs.conf.
    key_opens_volume: bool,
    mountpoint_ok: bool,
    /// No mount, or the mount is of this cipher directory by a live keysafe process.
    mount_matches: bool,
    /// No rule file, or it verifies.
    rules_verified: bool,
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct VolumeStatus {
    name: String,
    cipherdir: PathBuf,
    mountpoint: Option<PathBuf>,
    key_deposit: String,
    key_owner: Option<String>,
    recovery: Vec<String>,
    auto: bool,
    mounted: bool,
    mounted_at: Option<PathBuf>,
    pid: Option<u32>,
    /// The volume is mounted at its mount point but no process serves it any more (killed):
    /// `keysafe volume umount` clears it.
    dead_mount: bool,
    mode: String,
    rules: Vec<Rule>,
    rules_file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    integrity: Option<Integrity>,
}

/// The rule file as it is on disk, without verifying it (status without a key).
fn unverified_rules(path: &std::path::Path) -> Option<RuleSet> {
    let text = std::fs::read(path).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    serde_json::from_value(v.get("ruleset")?.clone()).ok()
}

async fn check(
    vault: &keysafe_client::vault::Vault,
    e: &VolumeEntry,
    st: &VolumeStatus,
) -> Integrity {
    let mut i = Integrity {
        ok: false,
        key_in_keysafe: false,
        key_opens_volume: false,
        mountpoint_ok: true,
        mount_matches: true,
        rules_verified: false,
        problems: Vec::new(),
    };
    let password = match e.key_deposit() {
        Ok(d) => match vault
            .get(e.key_owner.as_deref(), &d, None, CacheUse::Refresh)
            .await
        {
            Ok(o) => {
                i.key_in_keysafe = true;
                Some(Password::from_bytes(o.plaintext.to_vec()))
            }
            Err(err) => {
                i.problems
                    .push(format!("key deposit {}: {err}", e.key_deposit));
                None
            }
        },
        Err(err) => {
            i.problems.push(err.to_string());
            None
        }
    };
    match (VolumeConfig::load(&e.cipherdir), &password) {
        (Ok(cfg), Some(pw)) => {
            let pw2 = Password::from_bytes(pw.as_bytes().to_vec());
            match tokio::task::spawn_blocking(move || cfg.unlock(&pw2)).await {
                Ok(Ok(_)) => i.key_opens_volume = true,
                Ok(Err(err)) => i
                    .problems
                    .push(format!("the key does not open the volume: {err}")),
                Err(err) => i.problems.push(err.to_string()),
            }
        }
        (Err(err), _) => i.problems.push(err.to_string()),
        (Ok(_), None) => {}
    }
    if let Some(mp) = &e.mountpoint
        && !mp.is_dir()
    {
        i.mountpoint_ok = false;
        i.problems
            .push(format!("mount point {} is not a directory", mp.display()));
    }
    if let Some(mp) = &e.mountpoint
        && let Some(m) = mounts::is_mount_point(mp)
    {
        if m.source != mounts::source_of(&e.name) {
            i.mount_matches = false;
            i.problems.push(format!(
                "{} is mounted with something else ({} {})",
                mp.display(),
                m.fstype,
                m.source
            ));
        } else if st.pid.is_none() {
            i.mount_matches = false;
            i.problems.push(format!(
                "{} is mounted but no live keysafe process of this table serves it",
                mp.display()
            ));
        }
    }
    match &password {
        Some(pw) => match RulesKey::derive(pw, e.name.as_str()) {
            Ok(key) => match RuleSet::load(&st.rules_file, &key, e.name.as_str()) {
                Ok(_) => i.rules_verified = true,
                Err(err) => i.problems.push(err.to_string()),
            },
            Err(err) => i.problems.push(err.to_string()),
        },
        None => i
            .problems
            .push("the rules cannot be verified without the key".into()),
    }
    i.ok = i.problems.is_empty();
    i
}

pub async fn run(a: StatusArgs) -> anyhow::Result<()> {
    let (home, client) = home_and_client(&a.table)?;
    let table = table_of(&home, &a.table);
    let dir = table.volumes_dir();
    let vault = vault_for(&home, client)?;
    let mut out = Vec::new();
    let mut bad = 0;
    for e in table.load().map_err(verr)? {
        let rules_file = manage::rules_path(&table, &e.name);
        let rules = unverified_rules(&rules_file);
        let mounted_at = mounts::mounted_at(&dir, &e.name);
        let pid = RunState::read(&dir, &e.name)
            .filter(|s| s.alive() && Some(&s.mountpoint) == mounted_at.as_ref())
            .map(|s| s.pid);
        let mut st = VolumeStatus {
            name: e.name.to_string(),
            cipherdir: e.cipherdir.clone(),
            mountpoint: e.mountpoint.clone(),
            key_deposit: e.key_deposit.clone(),
            key_owner: e.key_owner.clone(),
            recovery: e.recovery.clone(),
            auto: e.auto,
            mounted: mounted_at.is_some(),
            dead_mount: mounted_at.is_none()
                && e.mountpoint.as_deref().is_some_and(|mp| {
                    mounts::is_mount_point(mp)
                        .is_some_and(|m| m.source == mounts::source_of(&e.name))
                }),
            mounted_at,
            pid,
            mode: rules
                .as_ref()
                .map(|r| r.mode.as_str())
                .unwrap_or("enforcing")
                .to_owned(),
            rules: rules.map(|r| r.rules).unwrap_or_default(),
            rules_file,
            integrity: None,
        };
        if a.integrity {
            let i = check(&vault, &e, &st).await;
            if !i.ok {
                bad += 1;
            }
            st.integrity = Some(i);
        }
        out.push(st);
    }
    if a.table.client.json {
        output::json(&out)?;
    } else if out.is_empty() {
        println!("No volumes (keysafe volume prepare adds one).");
    } else {
        let rows: Vec<Vec<String>> = out
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    match (&s.mounted_at, &s.mountpoint) {
                        (Some(p), _) => p.display().to_string(),
                        (None, Some(mp)) if s.dead_mount => format!("{} (dead)", mp.display()),
                        _ => "-".into(),
                    },
                    s.key_deposit.clone(),
                    format!("{} ({} rules)", s.mode, s.rules.len()),
                    s.cipherdir.display().to_string(),
                    match &s.integrity {
                        None => String::new(),
                        Some(i) if i.ok => "ok".into(),
                        Some(i) => i.problems.join("; "),
                    },
                ]
            })
            .collect();
        let mut header = vec!["NAME", "MOUNTED AT", "KEY DEPOSIT", "MODE", "CIPHERDIR"];
        if a.integrity {
            header.push("INTEGRITY");
        }
        output::table(&header, &rows);
    }
    if bad > 0 {
        return Err(verr(keysafe_volume::VolumeError::Conflict(format!(
            "{bad} volume(s) failed the integrity check"
        ))));
    }
    Ok(())
}
