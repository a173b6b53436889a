//! `keysafe admin unseal`, `keyring status|rotate|retire`, `backup create` (over the API) and
//! `seal migrate` (offline, on the data directory).

use crate::cli::{AdminBackupCommand, KeyringCommand, MigrateTo, SealCommand, SealKind};
use crate::cmd::secrets;
use crate::exit::usage;
use crate::output;
use crate::progress::Progress;
use anyhow::{Context, bail};
use keysafe_client::KeysafeClient;
use keysafe_core::keyring::Keyring;
use keysafe_core::seal::Seal;
use keysafe_core::store::{Mutation, Store, WrappedKind};
use keysafe_proto::api::{BackupRequest, KeyringStatusInfo};
use keysafe_server::config::{CONFIG_FILE, Config, SealConfig, SealTemplate};
use keysafe_server::seal::{SealInputs, create_seal, open_seal};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

pub async fn backup(
    client: &KeysafeClient,
    cmd: AdminBackupCommand,
    json: bool,
) -> anyhow::Result<()> {
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
    let spinner = Progress::spinner("the server is writing the backup");
    let bytes = client
        .backup(&BackupRequest {
            recipients,
            include_root_key,
        })
        .await;
    spinner.clear();
    let bytes = bytes?;
    let mut f = keysafe_core::seal::open_options_private()
        .open(&output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", output.display()))?;
    if json {
        return output::json(&serde_json::json!({
            "output": output.display().to_string(),
            "bytes": bytes.len(),
            "root_key_included": include_root_key,
        }));
    }
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

/// Replaces the `[seal]` section of a configuration file's text.
fn replace_seal_section(text: &str, section: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    let mut done = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            skipping = t == "[seal]";
            if skipping && !done {
                out.push_str(section);
                done = true;
            }
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !done {
        out.push('\n');
        out.push_str(section);
    }
    out
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("toml.new");
    let _ = std::fs::remove_file(&tmp);
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// `keysafe admin seal migrate --to ...`: opens the keyring with the current seal, wraps it
/// under the new one next to the old rows, switches the configuration, then deletes the old rows.
/// Interrupted before the switch, the old seal still opens the keyring; after it, the new one.
pub async fn migrate(dir: &Path, cmd: SealCommand, json: bool) -> anyhow::Result<()> {
    let SealCommand::Migrate {
        to,
        current_passphrase_file,
    } = cmd;
    let config = Config::load(dir)?;
    if std::net::TcpStream::connect_timeout(&config.listen, std::time::Duration::from_millis(300))
        .is_ok()
    {
        bail!(
            "something listens on {}: stop the server before migrating its seal",
            config.listen
        );
    }
    let store: Arc<dyn Store> = keysafe_store::open(&config.storage)
        .await
        .with_context(|| format!("cannot open {}", config.storage))?;
    let records = store.load_keks().await?;
    let old_pass = match config.seal {
        SealConfig::Passphrase => secrets::passphrase(
            current_passphrase_file.as_deref(),
            "Current keysafe passphrase: ",
            false,
        )?,
        _ => None,
    };
    let old: Arc<dyn Seal> = match open_seal(
        &config,
        &SealInputs {
            passphrase: old_pass,
        },
        &records,
    )
    .await?
    {
        Ok(Some(s)) => s,
        Ok(None) => bail!(
            "the current seal is a passphrase: pass --current-passphrase-file or set KEYSAFE_PASSPHRASE"
        ),
        Err(e) => bail!("cannot open the current seal: {e}"),
    };
    let o = old.clone();
    let r = records.clone();
    let ring = tokio::task::spawn_blocking(move || Keyring::open(o, &r))
        .await?
        .context("the current seal does not open the keyring")?;

    // The new configuration.
    let template = new_template(&config, &to)?;
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)?;
    let new_text = replace_seal_section(&text, &keysafe_server::config::seal_section(&template));
    let new_config = Config::parse(&config.data_dir, &new_text)?;
    if let (SealConfig::File { root_key_file }, SealConfig::File { .. }) =
        (&new_config.seal, &config.seal)
    {
        bail!(
            "the keyring is sealed by {} already",
            root_key_file.display()
        );
    }
    if let SealConfig::File { root_key_file } = &new_config.seal
        && root_key_file.exists()
    {
        bail!(
            "{} exists; move it away before migrating to the file seal",
            root_key_file.display()
        );
    }
    let new_pass = match new_config.seal {
        SealConfig::Passphrase => secrets::passphrase(
            to.passphrase_file.as_deref(),
            "New keysafe passphrase: ",
            true,
        )?,
        _ => None,
    };
    let new = create_seal(&new_config, new_pass).await?;
    if new.descriptor() == old.descriptor() {
        bail!("the new seal is the same as the current one");
    }

    // Per-deposit data keys carry an HSM layer: re-wrap them when that layer changes.
    let mut rewrapped = 0;
    if old.per_deposit() || new.per_deposit() {
        let from = ring.with_outer(Some(old.clone()));
        let to_ring = ring.with_outer(Some(new.clone()));
        let n = rewrap_all(store.as_ref(), from, to_ring).await?;
        rewrapped = n;
        if !json {
            eprintln!("Re-wrapped {n} data keys for the new seal.");
        }
    }
    let now = keysafe_proto::Timestamp::now();
    let n = new.clone();
    let rows = tokio::task::spawn_blocking(move || ring.wrap_all(n.as_ref(), now)).await??;
    for r in rows {
        store.apply(Mutation::InsertKek(r)).await?;
    }
    write_atomically(&config_path, &new_text)?;
    store
        .apply(Mutation::KeepOnlySeal {
            keep: new.descriptor(),
        })
        .await?;
    if json {
        return output::json(&serde_json::json!({
            "seal": new.kind(),
            "summary": keysafe_core::keyring::seal_summary(&new.descriptor()),
            "rewrapped_data_keys": rewrapped,
        }));
    }
    println!(
        "The keyring is now sealed by {} ({}).",
        new.kind(),
        keysafe_core::keyring::seal_summary(&new.descriptor())
    );
    if let SealConfig::File { root_key_file } = &config.seal {
        println!(
            "The old root key {} no longer opens this keyring (older backups still need it).",
            root_key_file.display()
        );
    }
    Ok(())
}

fn new_template(config: &Config, to: &MigrateTo) -> anyhow::Result<SealTemplate> {
    let mut t = SealTemplate::default();
    if let SealConfig::Pkcs11 {
        module,
        token,
        key_label,
        pin_file,
        mode,
    } = &config.seal
    {
        t.pkcs11_module = module.clone();
        t.pkcs11_token = token.clone();
        t.pkcs11_key = key_label.clone();
        t.pkcs11_pin_file = pin_file.clone();
        t.pkcs11_mode = mode.as_str().into();
    }
    t.kind = match to.kind {
        SealKind::File => "file",
        SealKind::Passphrase => "passphrase",
        SealKind::Pkcs11 => "pkcs11",
    }
    .into();
    if let Some(m) = &to.pkcs11_module {
        t.pkcs11_module = m.clone();
    }
    if let Some(x) = &to.pkcs11_token {
        t.pkcs11_token = x.clone();
    }
    if let Some(x) = &to.pkcs11_key {
        t.pkcs11_key = x.clone();
    }
    if let Some(x) = &to.pkcs11_mode {
        t.pkcs11_mode = x.clone();
    }
    if let Some(p) = &to.pkcs11_pin_file {
        t.pkcs11_pin_file = Some(std::path::absolute(p)?);
    }
    Ok(t)
}

/// Re-wraps every data key from one keyring form to another, keeping its version.
async fn rewrap_all(store: &dyn Store, from: Keyring, to: Keyring) -> anyhow::Result<u64> {
    let from = Arc::new(from);
    let to = Arc::new(to);
    let mut n = 0;
    let spinner = Progress::spinner("re-wrapping data keys for the new seal");
    for kind in WrappedKind::ALL {
        let mut after = None;
        loop {
            // Version 0 never exists: every row is "stale".
            let rows = store
                .list_stale_wrapped(*kind, 0, after.as_ref(), 256)
                .await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.id.clone());
            let (f, t) = (from.clone(), to.clone());
            let prepared = tokio::task::spawn_blocking(move || {
                rows.into_iter()
                    .map(|row| {
                        let aad = keysafe_core::service::rewrap::aad_for(&row.id);
                        let dek = f.unwrap_dek(row.kek_version, &aad, &row.wrapped)?;
                        let w = t.wrap_dek_with(row.kek_version, &aad, &dek)?;
                        Ok((row, w))
                    })
                    .collect::<Result<Vec<_>, keysafe_core::keyring::DekError>>()
            })
            .await??;
            for (row, wrapped) in prepared {
                store
                    .apply(Mutation::Rewrap {
                        id: row.id,
                        expected_kek: row.kek_version,
                        kek_version: row.kek_version,
                        wrapped,
                    })
                    .await?;
                n += 1;
            }
            spinner.set_message(&format!("re-wrapping data keys for the new seal: {n} done"));
        }
    }
    spinner.clear();
    Ok(n)
}
