//! `keysafe admin unseal`, `keyring status|rotate|retire` and `backup create`, over the API.
//! (`seal migrate`, offline on the data directory, is in `migrate`.)

use crate::cli::{AdminBackupCommand, KeyringCommand};
use crate::cmd::secrets;
use crate::exit::usage;
use crate::output;
use crate::progress::Progress;
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
                    "older".into()
                },
                v.data_keys.to_string(),
                v.created_at.to_string(),
            ]
        })
        .collect();
    output::table(&["VERSION", "STATE", "DATA KEYS", "CREATED"], &rows);
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
        KeyringCommand::Rotate { wait } => {
            let r = client.keyring_rotate().await?;
            if wait {
                wait_for_rewrap(client).await?;
            }
            if json {
                return output::json(&r);
            }
            if wait {
                println!(
                    "Keyring version {} is current; every data key is wrapped by it.",
                    r.version
                );
            } else {
                println!(
                    "Keyring version {} is current; existing data keys are being re-wrapped in the background (see `keysafe admin keyring status`, or rotate --wait).",
                    r.version
                );
            }
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

/// Polls the keyring status until no data key waits for the re-wrap job, showing how far it got
/// (a bar on a terminal; nothing otherwise).
async fn wait_for_rewrap(client: &KeysafeClient) -> anyhow::Result<()> {
    let first = client.keyring_status().await?.rewrap_pending;
    let bar = Progress::bar(first, "re-wrapping data keys");
    let mut pending = first;
    while pending > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        pending = client.keyring_status().await?.rewrap_pending;
        bar.set_length(first.max(pending));
        bar.set_position(first.max(pending) - pending);
    }
    bar.finish(&format!("re-wrapped {first} data keys"));
    Ok(())
}

/// `keysafe admin --home DIR backup create`: a backup over the API, streamed into the output
/// as it arrives. Key-bearing parts only when the server pins every recipient.
pub async fn backup(
    client: &KeysafeClient,
    cmd: AdminBackupCommand,
    json: bool,
) -> anyhow::Result<()> {
    let AdminBackupCommand::Create {
        recipients,
        include_root_key,
        include_admin_identity,
        include_tls_key,
        output,
        secrets: _,
    } = cmd;
    keysafe_server::backup::parse_recipients(&recipients).map_err(usage)?;
    let mut out = crate::cmd::backup::Output::create(&output)?;
    let includes = keysafe_server::backup::Includes {
        root_key: include_root_key,
        tls_key: include_tls_key,
        admin_identity: include_admin_identity,
    };
    let spinner = Progress::spinner("the server is writing the backup");
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, out.file().try_clone()?);
    let written = client
        .backup_to(
            &BackupRequest {
                recipients,
                include_root_key,
                include_tls_key,
                include_admin_identity,
            },
            &mut w,
        )
        .await;
    spinner.clear();
    written?;
    w.flush()
        .with_context(|| format!("cannot write {}", output.display()))?;
    drop(w);
    // The whole body arrived; check it reads to its signed end before keeping it is the
    // operator's `keysafe backup verify` (it needs an identity this command does not have).
    let path = out.persist()?;
    crate::cmd::backup::report(&path, &includes, None, json)
}
