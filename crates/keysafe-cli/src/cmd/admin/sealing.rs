//! `keysafe admin unseal`, `keyring status|rotate|retire` and `backup create`, over the API.
//! (`seal migrate`, offline on the data directory, is in `migrate`.)

use crate::cli::{AdminBackupCommand, KeyringCommand};
use crate::cmd::secrets;
use crate::exit::usage;
use crate::output;
use anyhow::Context;
use keysafe_client::KeysafeClient;
use keysafe_proto::api::{BackupRequest, KeyringStatusInfo};
use std::io::Write;
use std::path::PathBuf;

pub async fn unseal(
    client: &KeysafeClient,
    file: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let pass = secrets::passphrase(file.as_deref(), "keysafe passphrase: ", false)?
        .ok_or_else(|| {
            usage("no passphrase: pass --passphrase-file, set KEYSAFE_PASSPHRASE, or run on a terminal")
        })?;
    let status = client.unseal(&pass).await?;
    if json {
        return output::json(&status);
    }
    println!("Unsealed.");
    print_status(&status);
    Ok(())
}

fn print_status(s: &KeyringStatusInfo) {
    if s.sealed {
        println!(
            "SEALED: {}",
            s.sealed_reason
                .as_deref()
                .unwrap_or("the keyring is not open")
        );
    }
    if let Some(seal) = &s.seal {
        println!(
            "Seal: {seal}{}",
            if s.per_deposit { " (per-deposit)" } else { "" }
        );
    }
    if let Some(c) = s.current {
        println!("Current version: {c}");
    }
    let rows: Vec<Vec<String>> = s
        .versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                if v.current {
                    "current".into()
                } else {
                    String::new()
                },
                v.data_keys.to_string(),
                v.created_at.to_string(),
            ]
        })
        .collect();
    output::table(&["VERSION", "", "DATA KEYS", "CREATED"], &rows);
    println!("Data keys waiting to be re-wrapped: {}", s.rewrap_pending);
}

pub async fn keyring(
    client: &KeysafeClient,
    cmd: KeyringCommand,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        KeyringCommand::Status => {
            let s = client.keyring_status().await?;
            if json {
                return output::json(&s);
            }
            print_status(&s);
        }
        KeyringCommand::Rotate => {
            let r = client.keyring_rotate().await?;
            if json {
                return output::json(&r);
            }
            println!(
                "Keyring version {} is current; existing data keys are being re-wrapped in the background (see `keysafe admin keyring status`).",
                r.version
            );
        }
        KeyringCommand::Retire { version } => {
            let s = client.keyring_retire(version).await?;
            if json {
                return output::json(&s);
            }
            println!("Keyring version {version} retired.");
            print_status(&s);
        }
    }
    Ok(())
}

pub async fn backup(client: &KeysafeClient, cmd: AdminBackupCommand) -> anyhow::Result<()> {
    let AdminBackupCommand::Create {
        recipients,
        include_root_key,
        output,
    } = cmd;
    if output.exists() {
        return Err(usage(format!(
            "{} exists; refusing to overwrite it",
            output.display()
        )));
    }
    keysafe_server::backup::parse_recipients(&recipients).map_err(usage)?;
    let bytes = client
        .backup(&BackupRequest {
            recipients,
            include_root_key,
        })
        .await?;
    let mut f = keysafe_core::seal::open_options_private()
        .open(&output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "Backup written to {} ({} bytes{}).",
        output.display(),
        bytes.len(),
        if include_root_key {
            ", root key included"
        } else {
            ""
        }
    );
    Ok(())
}
