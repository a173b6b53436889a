//! `keysafe admin seal migrate`: moves the keyring to another seal, offline, so that a crash
//! (kill -9, power loss) at any instant leaves a data directory that the same command finishes
//! or `--rollback` undoes, with every data key readable.
//!
//! The steps, each safe to interrupt:
//!
//! 1. Lock the data directory exclusively (no server, no second migration beside it).
//! 2. Stage the new configuration as `keysafe.toml.migrating` (written and synced whole). While
//!    it exists, `keysafe serve` refuses to start and this command resumes that migration.
//! 3. Wrap every keyring version under the new seal *next to* the old rows.
//! 4. When the per-deposit layer changes (PKCS#11 `per-deposit` mode in or out, or another HSM
//!    key), move every data key to the new layer, one compare-and-set write per row: each row
//!    opens under the old or the new layer at every instant, and rows already moved are
//!    recognised and skipped on a re-run.
//! 5. The switch: rename `keysafe.toml.migrating` over `keysafe.toml` (one atomic rename, the
//!    directory synced).
//! 6. Delete the old seal's keyring rows (one transaction). Interrupted before it, the same
//!    command finishes it.
//!
//! `--rollback` (before the switch) moves the rows back to the old layer, deletes the new
//! seal's keyring rows, then a root key file the migration created, then the staged file.

use crate::cli::{MigrateTo, SealCommand, SealKind};
use crate::cmd::secrets;
use crate::exit::usage;
use crate::output;
use crate::progress::Progress;
use anyhow::{Context, bail};
use keysafe_core::fs::DataDirLock;
use keysafe_core::keyring::{Keyring, seal_summary};
use keysafe_core::seal::{FileSeal, KdfParams, PassphraseSeal, Seal, SealError};
use keysafe_core::service::rewrap::{LayerMove, move_outer_layer};
use keysafe_core::store::{KekRecord, Mutation, Store};
use keysafe_server::config::{CONFIG_FILE, Config, SealConfig, SealTemplate, seal_section};
use keysafe_server::seal::{create_seal, open_seal};
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The staged configuration of a migration in progress, next to `keysafe.toml`.
pub const STAGED_CONFIG: &str = "keysafe.toml.migrating";
/// Rows per batch of the layer move (one group-committed transaction each).
const BATCH: u32 = 256;

/// `keysafe admin --data-dir DIR seal migrate ...`.
pub async fn migrate(dir: &Path, cmd: SealCommand, json: bool) -> anyhow::Result<()> {
    let SealCommand::Migrate {
        to,
        current_passphrase_file,
        rollback,
    } = cmd;
    let _lock = DataDirLock::exclusive(dir)?;
    let config = Config::load(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    let staged_path = dir.join(STAGED_CONFIG);
    let staged = match std::fs::read_to_string(&staged_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context(format!("cannot read {}", staged_path.display())),
    };
    let store: Arc<dyn Store> = keysafe_store::open(&config.storage)
        .await
        .with_context(|| format!("cannot open {}", config.storage))?;
    let m = Migration {
        dir,
        config,
        store,
        current_passphrase_file: current_passphrase_file.as_deref(),
        json,
    };
    if rollback {
        let Some(staged) = staged else {
            bail!(
                "no seal migration is in progress in {}: nothing to roll back",
                dir.display()
            );
        };
        return m.roll_back(&staged).await;
    }
    let kind = to.kind.ok_or_else(|| usage("--to is required"))?;
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let new_text = replace_seal_section(&text, &seal_section(&new_template(&m.config, kind, &to)?));
    let new_config = Config::parse(&m.config.data_dir, &new_text)?;
    match staged {
        Some(staged) if staged == new_text => {
            eprintln!("Resuming the interrupted seal migration.");
            let records = m.store.load_keks().await?;
            let old = m.old_seal(&records).await?;
            let new_pass = new_passphrase(&new_config, &to, false)?;
            let new = resume_seal(&new_config, new_pass, &records, &old.descriptor()).await?;
            m.forward(old, new, &records).await
        }
        Some(staged) => {
            let pending = Config::parse(&m.config.data_dir, &staged)
                .map(|c| describe(&c.seal))
                .unwrap_or_else(|_| "another seal".into());
            bail!(
                "a seal migration to {pending} was interrupted in {}; run that same `seal migrate` again to finish it, or `seal migrate --rollback` to undo it",
                dir.display()
            )
        }
        None if new_text == text => m.finish_or_refuse(&to).await,
        None => {
            if let SealConfig::File { root_key_file } = &new_config.seal
                && root_key_file.exists()
            {
                bail!(
                    "{} exists; move it away before migrating to the file seal",
                    root_key_file.display()
                );
            }
            // The current seal and the new one are opened before anything is written: a
            // wrong passphrase or PIN changes nothing.
            let records = m.store.load_keks().await?;
            let old = m.old_seal(&records).await?;
            open_ring(old.clone(), &records).await?;
            let new_pass = new_passphrase(&new_config, &to, true)?;
            if let (Some(new), SealConfig::Passphrase) = (&new_pass, &m.config.seal)
                && passphrase_seal_among(&records, new, None).await?.is_some()
            {
                bail!("the new passphrase is the current one");
            }
            // A new root key file is the one thing created here; it comes after the staged
            // configuration, so that a rollback knows to remove it.
            let early = match new_config.seal {
                SealConfig::File { .. } => None,
                _ => Some(create_seal(&new_config, new_pass.clone()).await?),
            };
            keysafe_core::fs::replace(&staged_path, new_text.as_bytes(), mode_of(&config_path))
                .with_context(|| format!("cannot write {}", staged_path.display()))?;
            eprintln!("Staged the new configuration in {STAGED_CONFIG}.");
            let new = match early {
                Some(s) => s,
                None => match create_seal(&new_config, new_pass).await {
                    Ok(s) => s,
                    Err(e) => {
                        // Nothing was changed: no migration is left pending.
                        let _ = keysafe_core::fs::remove(&staged_path);
                        return Err(e);
                    }
                },
            };
            m.forward(old, new, &records).await
        }
    }
}

/// The new passphrase, when the new seal is a passphrase (asked twice on a terminal for a
/// new migration).
fn new_passphrase(
    new_config: &Config,
    to: &MigrateTo,
    confirm: bool,
) -> anyhow::Result<Option<Zeroizing<String>>> {
    match new_config.seal {
        SealConfig::Passphrase => secrets::passphrase(
            to.passphrase_file.as_deref(),
            "New keysafe passphrase: ",
            confirm,
        ),
        _ => Ok(None),
    }
}

struct Migration<'a> {
    dir: &'a Path,
    config: Config,
    store: Arc<dyn Store>,
    current_passphrase_file: Option<&'a Path>,
    /// Print the outcome as JSON on standard output.
    json: bool,
}

impl Migration<'_> {
    /// The current seal, opened with what this command was given.
    async fn old_seal(&self, records: &[KekRecord]) -> anyhow::Result<Arc<dyn Seal>> {
        if let SealConfig::Passphrase = self.config.seal {
            let pass = secrets::passphrase(
                self.current_passphrase_file,
                "Current keysafe passphrase: ",
                false,
            )?
            .context(
                "the current seal is a passphrase: pass --current-passphrase-file or set KEYSAFE_PASSPHRASE",
            )?;
            return passphrase_seal_among(records, &pass, None)
                .await?
                .context("the current passphrase does not open the keyring");
        }
        match open_seal(&self.config, &Default::default(), records).await? {
            Ok(Some(s)) => Ok(s),
            Ok(None) => bail!("cannot open the current seal"),
            Err(e) => bail!("cannot open the current seal: {e}"),
        }
    }

    async fn forward(
        &self,
        old: Arc<dyn Seal>,
        new: Arc<dyn Seal>,
        records: &[KekRecord],
    ) -> anyhow::Result<()> {
        let ring = open_ring(old.clone(), records).await?;
        if new.descriptor() == old.descriptor() {
            bail!("the new seal is the same as the current one");
        }

        // 3. The keyring under the new seal, next to the old rows.
        if records.iter().any(|r| r.seal == new.descriptor()) {
            let theirs = open_ring(new.clone(), records).await?;
            if !theirs.agrees_with(&ring) {
                bail!(
                    "keyring rows of the new seal exist and hold other keys than this keyring; roll back with `seal migrate --rollback`"
                );
            }
        }
        let now = keysafe_proto::Timestamp::now();
        let (r, n) = (ring.clone(), new.clone());
        let rows = tokio::task::spawn_blocking(move || r.wrap_all(n.as_ref(), now)).await??;
        for row in rows {
            if records
                .iter()
                .any(|r| r.seal == row.seal && r.version == row.version)
            {
                continue;
            }
            self.store.apply(Mutation::InsertKek(row)).await?;
        }
        eprintln!("Wrote the keyring under the new seal.");

        // 4. The per-deposit layer.
        if old.per_deposit() || new.per_deposit() {
            let total = wrapped_rows(self.store.as_ref()).await?;
            let from = Arc::new(ring.with_outer(Some(old.clone())));
            let to_ring = Arc::new(ring.with_outer(Some(new.clone())));
            let bar = Progress::bar(total, "re-wrapping data keys for the new seal");
            let lines = bar.wants_lines();
            let done = move_outer_layer(self.store.as_ref(), from, to_ring, BATCH, |p| {
                bar.set_position(p.seen());
                if lines {
                    eprintln!(
                        "Re-wrapped {} of {total} data keys for the new seal.",
                        p.seen()
                    );
                }
            })
            .await?;
            bar.clear();
            report(&done);
        }

        // 5. The switch.
        keysafe_core::fs::rename(&self.dir.join(STAGED_CONFIG), &self.dir.join(CONFIG_FILE))
            .context("cannot switch the configuration")?;
        eprintln!("Switched {CONFIG_FILE} to the new seal.");

        // 6. The old rows go.
        self.store
            .apply(Mutation::KeepOnlySeal {
                keep: new.descriptor(),
            })
            .await?;
        if self.json {
            return output::json(&serde_json::json!({
                "seal": new.kind(),
                "summary": seal_summary(&new.descriptor()),
            }));
        }
        println!(
            "The keyring is now sealed by {} ({}).",
            new.kind(),
            seal_summary(&new.descriptor())
        );
        if let SealConfig::File { root_key_file } = &self.config.seal {
            println!(
                "The old root key {} no longer opens this keyring (older backups still need it).",
                root_key_file.display()
            );
        }
        Ok(())
    }

    /// The configuration names the requested seal already: either an earlier run switched it
    /// and was interrupted before it deleted the old keyring rows (finish that), or there is
    /// nothing to do.
    async fn finish_or_refuse(&self, to: &MigrateTo) -> anyhow::Result<()> {
        let records = self.store.load_keks().await?;
        if distinct_seals(&records) <= 1 {
            bail!(
                "the keyring is sealed by {} already",
                describe(&self.config.seal)
            );
        }
        let seal = match self.config.seal {
            SealConfig::Passphrase => {
                let pass = secrets::passphrase(
                    to.passphrase_file
                        .as_deref()
                        .or(self.current_passphrase_file),
                    "keysafe passphrase: ",
                    false,
                )?
                .context(
                    "the seal is a passphrase: pass --passphrase-file or set KEYSAFE_PASSPHRASE",
                )?;
                passphrase_seal_among(&records, &pass, None)
                    .await?
                    .context("the passphrase does not open the keyring")?
            }
            _ => self.old_seal(&records).await?,
        };
        open_ring(seal.clone(), &records).await?;
        self.store
            .apply(Mutation::KeepOnlySeal {
                keep: seal.descriptor(),
            })
            .await?;
        if self.json {
            return output::json(&serde_json::json!({
                "seal": seal.kind(),
                "summary": seal_summary(&seal.descriptor()),
            }));
        }
        println!(
            "Finished the interrupted seal migration: the keyring is sealed by {} ({}).",
            seal.kind(),
            seal_summary(&seal.descriptor())
        );
        Ok(())
    }

    async fn roll_back(&self, staged: &str) -> anyhow::Result<()> {
        let new_config = Config::parse(&self.config.data_dir, staged)
            .with_context(|| format!("cannot read {STAGED_CONFIG}"))?;
        let records = self.store.load_keks().await?;
        let old = self.old_seal(&records).await?;
        let ring = open_ring(old.clone(), &records).await?;
        // Rows can be under the new layer only when it is an HSM key in per-deposit mode.
        let new_outer: Option<Arc<dyn Seal>> = match &new_config.seal {
            SealConfig::Pkcs11 {
                mode: keysafe_hsm::Pkcs11Mode::PerDeposit,
                ..
            } => {
                let settings = keysafe_server::seal::pkcs11_settings(&new_config.seal)?
                    .context("pkcs11 settings")?;
                match tokio::task::spawn_blocking(move || {
                    keysafe_hsm::Pkcs11Seal::open(&settings, false)
                })
                .await?
                {
                    Ok(s) => Some(Arc::new(s) as Arc<dyn Seal>),
                    // Never created (the migration stopped before), or destroyed since: no row
                    // can be opened under it either way.
                    Err(SealError::HsmKeyMissing { .. }) => None,
                    Err(e) => return Err(e.into()),
                }
            }
            _ => None,
        };
        if old.per_deposit() || new_outer.is_some() {
            let total = wrapped_rows(self.store.as_ref()).await?;
            let from = Arc::new(ring.with_outer(new_outer));
            let back = Arc::new(ring.with_outer(Some(old.clone())));
            let bar = Progress::bar(total, "re-wrapping data keys back for the current seal");
            let lines = bar.wants_lines();
            let done = move_outer_layer(self.store.as_ref(), from, back, BATCH, |p| {
                bar.set_position(p.seen());
                if lines {
                    eprintln!(
                        "Re-wrapped {} of {total} data keys back for the current seal.",
                        p.seen()
                    );
                }
            })
            .await?;
            bar.clear();
            report(&done);
        }
        self.store
            .apply(Mutation::KeepOnlySeal {
                keep: old.descriptor(),
            })
            .await?;
        if let SealConfig::File { root_key_file } = &new_config.seal {
            let same = matches!(&self.config.seal, SealConfig::File { root_key_file: r } if r == root_key_file);
            if !same {
                keysafe_core::fs::remove(root_key_file)
                    .with_context(|| format!("cannot remove {}", root_key_file.display()))?;
            }
        }
        keysafe_core::fs::remove(&self.dir.join(STAGED_CONFIG))
            .with_context(|| format!("cannot remove {STAGED_CONFIG}"))?;
        if self.json {
            return output::json(&serde_json::json!({
                "rolled_back": true,
                "seal": old.kind(),
                "summary": seal_summary(&old.descriptor()),
            }));
        }
        println!(
            "Rolled back: the keyring is sealed by {} ({}) as before.",
            old.kind(),
            seal_summary(&old.descriptor())
        );
        Ok(())
    }
}

fn report(done: &LayerMove) {
    eprintln!(
        "Data keys: {} re-wrapped, {} under the target layer already, {} changed meanwhile.",
        done.moved, done.already, done.skipped
    );
    if done.unreadable > 0 {
        eprintln!(
            "warning: {} data keys open under neither seal (tampered); they were left as they are",
            done.unreadable
        );
    }
}

fn distinct_seals(records: &[KekRecord]) -> usize {
    let mut seals: Vec<&str> = records.iter().map(|r| r.seal.as_str()).collect();
    seals.sort_unstable();
    seals.dedup();
    seals.len()
}

async fn wrapped_rows(store: &dyn Store) -> anyhow::Result<u64> {
    Ok(store.kek_usage().await?.iter().map(|u| u.count).sum())
}

async fn open_ring(seal: Arc<dyn Seal>, records: &[KekRecord]) -> anyhow::Result<Arc<Keyring>> {
    let r = records.to_vec();
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || Keyring::open(seal, &r))
            .await?
            .context("the seal does not open the keyring")?,
    ))
}

/// The passphrase seal, among the passphrase-sealed rows (other than `except`), that `pass`
/// opens; `None` when it opens none.
async fn passphrase_seal_among(
    records: &[KekRecord],
    pass: &Zeroizing<String>,
    except: Option<&str>,
) -> anyhow::Result<Option<Arc<dyn Seal>>> {
    let mut descriptors: Vec<String> = records
        .iter()
        .map(|r| r.seal.clone())
        .filter(|d| KdfParams::is_descriptor(d) && Some(d.as_str()) != except)
        .collect();
    descriptors.sort();
    descriptors.dedup();
    let records = records.to_vec();
    let pass = pass.clone();
    Ok(tokio::task::spawn_blocking(move || {
        for d in descriptors {
            let params = KdfParams::parse(&d)?;
            let seal: Arc<dyn Seal> = Arc::new(PassphraseSeal::derive(pass.as_bytes(), params)?);
            match Keyring::open(seal.clone(), &records) {
                Ok(_) => return Ok(Some(seal)),
                Err(SealError::WrongPassphrase | SealError::WrongKey) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok::<_, SealError>(None)
    })
    .await??)
}

/// The new seal of a migration that is resumed: the root key file or HSM key it created, or
/// the passphrase parameters of the rows it wrote (the passphrase must be the one given then).
async fn resume_seal(
    new_config: &Config,
    pass: Option<Zeroizing<String>>,
    records: &[KekRecord],
    old: &str,
) -> anyhow::Result<Arc<dyn Seal>> {
    match &new_config.seal {
        SealConfig::File { root_key_file } if root_key_file.exists() => {
            Ok(Arc::new(FileSeal::open(root_key_file)?))
        }
        SealConfig::Passphrase => {
            let written = records
                .iter()
                .any(|r| KdfParams::is_descriptor(&r.seal) && r.seal != old);
            if !written {
                return create_seal(new_config, pass).await;
            }
            let pass = pass.context(
                "the new seal is a passphrase: pass --passphrase-file or set KEYSAFE_PASSPHRASE",
            )?;
            passphrase_seal_among(records, &pass, Some(old))
                .await?
                .context("this is not the new passphrase the interrupted migration was given")
        }
        _ => create_seal(new_config, pass).await,
    }
}

/// A short description of a configured seal, for messages.
fn describe(seal: &SealConfig) -> String {
    match seal {
        SealConfig::File { root_key_file } => format!("file ({})", root_key_file.display()),
        SealConfig::Passphrase => "passphrase".into(),
        SealConfig::Pkcs11 {
            token,
            key_label,
            mode,
            ..
        } => format!("pkcs11 (token {token}, key {key_label}, {})", mode.as_str()),
    }
}

/// The permission bits of an existing file (0644 when they cannot be read).
fn mode_of(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            return m.permissions().mode() & 0o777;
        }
    }
    let _ = path;
    0o644
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

fn new_template(config: &Config, kind: SealKind, to: &MigrateTo) -> anyhow::Result<SealTemplate> {
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
    t.kind = match kind {
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
