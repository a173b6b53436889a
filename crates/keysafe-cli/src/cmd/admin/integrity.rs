//! `keysafe admin integrity verify`: every authenticated access row checked (ADR 0013), over
//! the API for an administrator (`--home`), or offline on the data directory (`--data-dir`
//! alone), where the seal opens the key the rows are authenticated under. Exit 7 when a row
//! fails.

use crate::cli::IntegrityCommand;
use crate::cmd::secrets;
use crate::exit::{SecurityError, usage};
use crate::output;
use anyhow::Context;
use keysafe_client::KeysafeClient;
use keysafe_core::clock::SystemClock;
use keysafe_core::fs::DataDirLock;
use keysafe_core::service::{Limits, Service};
use keysafe_proto::api::IntegrityReport;
use keysafe_server::config::{Config, SealConfig};
use keysafe_server::seal::{SealInputs, open_seal};
use std::path::Path;
use std::sync::Arc;

pub async fn online(client: &KeysafeClient, json: bool) -> anyhow::Result<()> {
    report(client.integrity_verify().await?, json)
}

pub async fn offline(dir: &Path, cmd: &IntegrityCommand, json: bool) -> anyhow::Result<()> {
    let IntegrityCommand::Verify {
        secrets: secret_args,
    } = cmd;
    // Shared with running servers; refused while a seal migration works on the directory.
    let _lock = DataDirLock::shared(dir)?;
    let mut config = Config::load(dir)?;
    if let (SealConfig::Pkcs11 { pin_file, .. }, Some(f)) =
        (&mut config.seal, &secret_args.pkcs11_pin_file)
    {
        *pin_file = Some(f.clone());
    }
    let store = keysafe_store::open(&config.storage)
        .await
        .with_context(|| format!("cannot open {}", config.storage))?;
    let passphrase = match config.seal {
        SealConfig::Passphrase => secrets::passphrase(
            secret_args.passphrase_file.as_deref(),
            "keysafe passphrase: ",
            false,
        )?,
        _ => None,
    };
    let keks = store.load_keks().await?;
    let seal = open_seal(&config, &SealInputs { passphrase }, &keks)
        .await?
        .map_err(anyhow::Error::from)?
        .ok_or_else(|| {
            usage(
                "the rows are authenticated under a key the seal opens: give the passphrase \
                 (--passphrase-file, KEYSAFE_PASSPHRASE, or the prompt on a terminal)",
            )
        })?;
    let service =
        Service::open(store, Some(seal), Arc::new(SystemClock), Limits::default()).await?;
    let r = service.verify_integrity().await;
    service.store().close().await;
    report(r?, json)
}

fn report(r: IntegrityReport, json: bool) -> anyhow::Result<()> {
    if json {
        output::json(&r)?;
    } else {
        for f in &r.failures {
            println!("FAILED  {} {}: {}", f.kind, f.key, f.reason);
        }
        println!(
            "{} authenticated rows checked, {} failed.",
            r.checked,
            r.failures.len()
        );
    }
    if r.failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow::Error::new(SecurityError(format!(
            "{} authenticated rows fail their integrity check",
            r.failures.len()
        ))))
    }
}
