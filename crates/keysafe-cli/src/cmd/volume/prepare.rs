//! `keysafe volume prepare` and `keysafe volume adopt`.

use super::{AdoptArgs, NewVolumeArgs, PrepareArgs, home_and_client, table_of, verr};
use crate::cmd::vault_for;
use crate::output;
use anyhow::Context;
use keysafe_volume::format::Password;
use keysafe_volume::format::config::DEFAULT_SCRYPT_LOG_N;
use keysafe_volume::manage::{self, NewVolume};
use keysafe_volume::table::{VolumeEntry, VolumeName};
use std::io::IsTerminal;

fn new_volume(a: &NewVolumeArgs) -> anyhow::Result<NewVolume> {
    Ok(NewVolume {
        cipherdir: a.cipherdir.clone(),
        mountpoint: a.mountpoint.clone(),
        name: a
            .name
            .as_deref()
            .map(VolumeName::parse)
            .transpose()
            .map_err(verr)?,
        recovery: a.recovery.clone(),
        auto: !a.no_auto,
        scrypt_log_n: DEFAULT_SCRYPT_LOG_N,
    })
}

fn report(verb: &str, e: &VolumeEntry, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(e);
    }
    println!(
        "{verb} volume {} in {}; its password is deposit {}{}.",
        e.name,
        e.cipherdir.display(),
        e.key_deposit,
        if e.recovery.is_empty() {
            String::new()
        } else {
            format!(", shared with {}", e.recovery.join(", "))
        }
    );
    match &e.mountpoint {
        Some(mp) => println!(
            "Mount it with: keysafe volume mount {} {}",
            e.cipherdir.display(),
            mp.display()
        ),
        None => println!(
            "Mount it with: keysafe volume mount {} MOUNTPOINT",
            e.cipherdir.display()
        ),
    }
    Ok(())
}

pub async fn prepare(a: PrepareArgs) -> anyhow::Result<()> {
    let v = new_volume(&a.new)?;
    let (home, client) = home_and_client(&a.new.table)?;
    let table = table_of(&home, &a.new.table);
    let vault = vault_for(&home, client)?;
    let e = manage::prepare(&vault, &table, &v).await.map_err(verr)?;
    report("Prepared", &e, a.new.table.client.json)
}

/// The current password of a gocryptfs directory: from a file, a prompt, or standard input.
fn old_password(a: &AdoptArgs) -> anyhow::Result<Password> {
    if let Some(p) = &a.password_file {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        return Ok(Password::from_bytes(bytes));
    }
    if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password("Current gocryptfs password: ")
            .context("cannot read the password")?;
        return Ok(Password::from_bytes(pw.into_bytes()));
    }
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
        .context("cannot read the password from standard input")?;
    // gocryptfs reads the first line of a password file.
    if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
        buf.truncate(nl);
    }
    Ok(Password::from_bytes(buf))
}

pub async fn adopt(a: AdoptArgs) -> anyhow::Result<()> {
    let v = new_volume(&a.new)?;
    let old = old_password(&a)?;
    let (home, client) = home_and_client(&a.new.table)?;
    let table = table_of(&home, &a.new.table);
    let vault = vault_for(&home, client)?;
    let e = manage::adopt(&vault, &table, &v, old).await.map_err(verr)?;
    if !a.new.table.client.json {
        eprintln!(
            "The volume's master key is now wrapped under a new password held only in keysafe; \
             the old password no longer opens {} (it still opens any copy of the old \
             gocryptfs.conf).",
            e.cipherdir.join("gocryptfs.conf").display()
        );
    }
    report("Adopted", &e, a.new.table.client.json)
}
