//! `keysafe luks bind|unlock|unbind|status`: LUKS2 disks whose extra key slot holds a random key
//! deposited in keysafe (`luks/NAME`), recorded in a LUKS2 token on the device. The release of
//! the key is a keysafe `get`: refused once the host's client is disabled or the deposit is
//! unshared, held back for a pending client in an approval-mode organisation, and audited.

use crate::cli::ClientArgs;
use crate::cmd::{client_for, deposit_name, vault_for};
use crate::exit::usage;
use crate::output;
use anyhow::Context;
use clap::{Args, Subcommand};
use keysafe_volume::VolumeError;
use keysafe_volume::format::Password;
use keysafe_volume::keys::{self, KeyRef};
use keysafe_volume::luks::{self, ExistingKey, Token};
use keysafe_volume::table::VolumeName;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum LuksCommand {
    /// Add a key slot with a random key deposited in keysafe as luks/NAME (authorised by an
    /// existing passphrase).
    #[command(
        after_help = "Example:\n  keysafe luks bind /dev/sdb1 --name data --recovery group:recovery --existing-key-file /root/sdb1.pass"
    )]
    Bind(BindArgs),
    /// Fetch the key from keysafe (every server at once) and open the device as
    /// /dev/mapper/MAPPING; --test only checks that the key opens it.
    #[command(
        after_help = "Examples:\n  keysafe luks unlock /dev/sdb1 data\n  keysafe luks unlock /srv/disk.img --test"
    )]
    Unlock(UnlockArgs),
    /// Remove the keysafe key slot and token (and soft-delete the deposit).
    #[command(after_help = "Example:\n  keysafe luks unbind /dev/sdb1")]
    Unbind(UnbindArgs),
    /// Show the keysafe bindings of a device.
    #[command(after_help = "Example:\n  keysafe luks status /dev/sdb1 --json")]
    Status(LuksStatusArgs),
}

#[derive(Debug, Args)]
pub struct BindArgs {
    /// The LUKS2 device (or image file).
    pub device: PathBuf,
    /// The disk's name; its key is deposit luks/NAME.
    #[arg(long)]
    pub name: String,
    /// Share the key (read-only) with this principal for recovery. Repeatable.
    #[arg(long = "recovery")]
    pub recovery: Vec<String>,
    /// A file with a passphrase of an existing key slot (otherwise prompted for).
    #[arg(long)]
    pub existing_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    pub device: PathBuf,
    /// The device-mapper name to open it as (not with --test).
    pub mapping: Option<String>,
    /// The disk's name (default: from the device's keysafe token).
    #[arg(long)]
    pub name: Option<String>,
    /// The deposit's owner when it is not this client (recovery on another host).
    #[arg(long)]
    pub owner: Option<String>,
    /// Only check that the key opens the device (cryptsetup --test-passphrase).
    #[arg(long)]
    pub test: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct UnbindArgs {
    pub device: PathBuf,
    /// The disk's name (default: from the device's keysafe token).
    #[arg(long)]
    pub name: Option<String>,
    /// Keep the deposit in keysafe (it is soft-deleted otherwise).
    #[arg(long)]
    pub keep_deposit: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct LuksStatusArgs {
    pub device: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn verr(e: VolumeError) -> anyhow::Error {
    crate::cmd::volume::verr(e)
}

fn disk_deposit(name: &str) -> anyhow::Result<keysafe_proto::DepositName> {
    let n = VolumeName::parse(name).map_err(verr)?;
    deposit_name(&format!("luks/{n}"))
}

/// The binding to use: by --name, else the device's only keysafe token.
fn binding(
    device: &Path,
    name: Option<&str>,
) -> anyhow::Result<(Option<(u32, Token)>, keysafe_proto::DepositName)> {
    let meta = luks::metadata(device).map_err(verr)?;
    let tokens = luks::tokens(&meta);
    match name {
        Some(n) => {
            let d = disk_deposit(n)?;
            let t = tokens.into_iter().find(|(_, t)| t.deposit == d.as_str());
            Ok((t, d))
        }
        None => match tokens.as_slice() {
            [(_, t)] => {
                let d = deposit_name(&t.deposit)?;
                Ok((tokens.into_iter().next(), d))
            }
            [] => Err(usage(format!(
                "{} has no keysafe binding; give --name",
                device.display()
            ))),
            _ => Err(usage(format!(
                "{} has several keysafe bindings; give --name",
                device.display()
            ))),
        },
    }
}

fn existing_key(a: &BindArgs) -> anyhow::Result<ExistingKey> {
    if let Some(p) = &a.existing_key_file {
        return Ok(ExistingKey::File(p.clone()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(
            "give --existing-key-file (a passphrase of an existing key slot)",
        ));
    }
    let pw = rpassword::prompt_password(format!(
        "A passphrase of an existing key slot of {}: ",
        a.device.display()
    ))
    .context("cannot read the passphrase")?;
    Ok(ExistingKey::Bytes(zeroize::Zeroizing::new(pw.into_bytes())))
}

async fn bind(a: BindArgs) -> anyhow::Result<()> {
    let deposit = disk_deposit(&a.name)?;
    luks::check_luks2(&a.device).map_err(verr)?;
    let meta = luks::metadata(&a.device).map_err(verr)?;
    if luks::tokens(&meta)
        .iter()
        .any(|(_, t)| t.deposit == deposit.as_str())
    {
        return Err(verr(VolumeError::Conflict(format!(
            "{} is bound to {deposit} already",
            a.device.display()
        ))));
    }
    let slot = luks::free_slot(&meta).map_err(verr)?;
    let existing = existing_key(&a)?;
    let (home, client) = client_for(&a.client)?;
    let vault = vault_for(&home, client)?;
    keys::check_recovery(&vault, &a.recovery)
        .await
        .map_err(verr)?;
    let key = Password::generate().map_err(|e| verr(e.into()))?;
    keys::deposit_key(&vault, &deposit, key.as_bytes(), &a.recovery)
        .await
        .map_err(verr)?;
    if let Err(e) = luks::add_key(&a.device, &existing, key.as_bytes(), slot) {
        // The key opens nothing: take it out of keysafe again.
        if let Err(purge) = vault.client().purge(&deposit).await {
            tracing::warn!(error = %purge, "cannot remove the unused deposit");
        }
        return Err(verr(e));
    }
    let owner = vault
        .client()
        .own_fingerprint()
        .map(|f| f.as_str().to_owned())
        .unwrap_or_default();
    luks::import_token(
        &a.device,
        &Token {
            kind: luks::TOKEN_TYPE.into(),
            keyslots: vec![slot.to_string()],
            deposit: deposit.as_str().to_owned(),
            owner,
            recovery: a.recovery.clone(),
        },
    )
    .map_err(verr)?;
    luks::test_key(&a.device, key.as_bytes(), Some(slot)).map_err(verr)?;
    if a.client.json {
        return output::json(&serde_json::json!({
            "device": a.device,
            "slot": slot,
            "deposit": deposit.as_str(),
            "recovery": a.recovery,
        }));
    }
    println!(
        "Bound {} key slot {slot} to keysafe deposit {deposit}{}.",
        a.device.display(),
        if a.recovery.is_empty() {
            String::new()
        } else {
            format!(" (shared with {})", a.recovery.join(", "))
        }
    );
    Ok(())
}

async fn fetch(
    device: &Path,
    name: Option<&str>,
    owner: Option<&str>,
    c: &ClientArgs,
) -> anyhow::Result<(
    Option<(u32, Token)>,
    keysafe_proto::DepositName,
    keys::FetchedKey,
)> {
    let (token, deposit) = binding(device, name)?;
    let (home, client) = client_for(c)?;
    let vault = vault_for(&home, client)?;
    let me = vault.client().own_fingerprint();
    // The token names the owner; it is this client's own deposit unless said otherwise.
    let owner = owner.map(str::to_owned).or_else(|| {
        token
            .as_ref()
            .map(|(_, t)| t.owner.clone())
            .filter(|o| me.as_ref().is_none_or(|m| m.as_str() != o))
    });
    let key = keys::fetch_key(
        &vault,
        &KeyRef {
            deposit: deposit.clone(),
            owner,
        },
    )
    .await
    .map_err(verr)?;
    crate::cmd::volume::warn_stale(&format!("disk {deposit}"), &key.source);
    Ok((token, deposit, key))
}

async fn unlock(a: UnlockArgs) -> anyhow::Result<()> {
    if !a.test && a.mapping.is_none() {
        return Err(usage(
            "give a MAPPING name to open the device as, or --test",
        ));
    }
    if let Some(m) = &a.mapping {
        luks::check_mapping(m).map_err(verr)?;
    }
    let (token, deposit, key) =
        fetch(&a.device, a.name.as_deref(), a.owner.as_deref(), &a.client).await?;
    let slot = token
        .as_ref()
        .and_then(|(_, t)| t.keyslots.first())
        .and_then(|s| s.parse().ok());
    if a.test {
        luks::test_key(&a.device, &key.secret, slot).map_err(verr)?;
        if a.client.json {
            return output::json(&serde_json::json!({
                "device": a.device, "deposit": deposit.to_string(), "keyslot": slot, "opens": true,
            }));
        }
        println!(
            "The key in {deposit} opens {} (key slot {}).",
            a.device.display(),
            slot.map(|s: u32| s.to_string())
                .unwrap_or_else(|| "?".into())
        );
        return Ok(());
    }
    let mapping = a.mapping.as_deref().unwrap_or_default();
    luks::open(&a.device, mapping, &key.secret).map_err(verr)?;
    if a.client.json {
        return output::json(&serde_json::json!({
            "device": a.device, "deposit": deposit.to_string(), "mapping": format!("/dev/mapper/{mapping}"),
        }));
    }
    println!("Opened {} as /dev/mapper/{mapping}.", a.device.display());
    Ok(())
}

async fn unbind(a: UnbindArgs) -> anyhow::Result<()> {
    let (token, deposit, key) = fetch(&a.device, a.name.as_deref(), None, &a.client).await?;
    let meta = luks::metadata(&a.device).map_err(verr)?;
    if luks::slots(&meta).len() <= 1 {
        return Err(verr(VolumeError::Conflict(format!(
            "the keysafe key is the only key slot of {}: add another passphrase first \
             (cryptsetup luksAddKey), or the disk becomes unreadable",
            a.device.display()
        ))));
    }
    luks::remove_key(&a.device, &key.secret).map_err(verr)?;
    if let Some((id, _)) = token {
        luks::remove_token(&a.device, id).map_err(verr)?;
    }
    if !a.keep_deposit {
        let (_, client) = client_for(&a.client)?;
        client.delete(&deposit).await?;
    }
    if a.client.json {
        return output::json(&serde_json::json!({
            "device": a.device, "deposit": deposit.to_string(), "deposit_deleted": !a.keep_deposit,
        }));
    }
    println!(
        "Unbound {} from {deposit}{}.",
        a.device.display(),
        if a.keep_deposit {
            ""
        } else {
            " (deposit soft-deleted; `keysafe undelete` restores it)"
        }
    );
    Ok(())
}

pub async fn run(c: LuksCommand) -> anyhow::Result<()> {
    match c {
        LuksCommand::Bind(a) => bind(a).await,
        LuksCommand::Unlock(a) => unlock(a).await,
        LuksCommand::Unbind(a) => unbind(a).await,
        LuksCommand::Status(a) => {
            let meta = luks::metadata(&a.device).map_err(verr)?;
            let tokens: Vec<serde_json::Value> = luks::tokens(&meta)
                .into_iter()
                .map(|(id, t)| serde_json::json!({"token": id, "keyslots": t.keyslots, "deposit": t.deposit, "owner": t.owner, "recovery": t.recovery}))
                .collect();
            if a.client.json {
                return output::json(&serde_json::json!({
                    "device": a.device,
                    "keyslots": luks::slots(&meta),
                    "bindings": tokens,
                }));
            }
            println!("{}: key slots {:?}", a.device.display(), luks::slots(&meta));
            for t in tokens {
                println!("  keysafe binding: {t}");
            }
            Ok(())
        }
    }
}
