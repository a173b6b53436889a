//! Building the configured seal: the root key file, a passphrase (with its Argon2id parameters
//! taken from the keyring rows), or an HSM key over PKCS#11 (PIN from a file or
//! `KEYSAFE_PKCS11_PIN`).

use crate::config::{Config, SealConfig};
use anyhow::{Context, bail};
use keysafe_core::seal::{FileSeal, KdfParams, PassphraseSeal, Seal, SealError};
use keysafe_core::store::KekRecord;
use keysafe_hsm::{Pkcs11Seal, Pkcs11Settings};
use std::sync::Arc;
use zeroize::Zeroizing;

/// The environment variable that may hold the HSM user PIN.
pub const PIN_ENV: &str = "KEYSAFE_PKCS11_PIN";
/// The environment variable that may hold the passphrase.
pub const PASSPHRASE_ENV: &str = "KEYSAFE_PASSPHRASE";

/// Secrets given at start (never stored by keysafe).
#[derive(Default)]
pub struct SealInputs {
    pub passphrase: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for SealInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealInputs")
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Reads a secret file (PIN, passphrase), refusing one that group or others can read, and
/// trimming one trailing newline.
pub fn read_secret_file(path: &std::path::Path) -> anyhow::Result<Zeroizing<String>> {
    if let Err(e) = keysafe_core::seal::check_private_file(path) {
        match e {
            keysafe_core::seal::PrivateFileError::Insecure(mode) => bail!(
                "{} is readable by group or others (mode {mode:o}); run: chmod 600 {}",
                path.display(),
                path.display()
            ),
            keysafe_core::seal::PrivateFileError::Io(e) => {
                bail!("cannot read {}: {e}", path.display())
            }
        }
    }
    let s = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    let t = s
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&s);
    Ok(Zeroizing::new(t.to_owned()))
}

/// The PKCS#11 settings of a configuration, with the PIN read from its file or the environment.
pub fn pkcs11_settings(seal: &SealConfig) -> anyhow::Result<Option<Pkcs11Settings>> {
    let SealConfig::Pkcs11 {
        module,
        token,
        key_label,
        pin_file,
        mode,
    } = seal
    else {
        return Ok(None);
    };
    let pin = match pin_file {
        Some(f) => read_secret_file(f).context("cannot read the HSM PIN file")?,
        None => match std::env::var(PIN_ENV) {
            Ok(p) => Zeroizing::new(p),
            Err(_) => bail!(
                "the pkcs11 seal needs the HSM user PIN: set seal.pkcs11_pin_file or {PIN_ENV}"
            ),
        },
    };
    Ok(Some(Pkcs11Settings {
        module: module.clone(),
        token: token.clone(),
        key_label: key_label.clone(),
        pin,
        mode: *mode,
    }))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SealError> + Send + 'static,
) -> anyhow::Result<Result<T, SealError>> {
    tokio::task::spawn_blocking(f)
        .await
        .context("seal task failed")
}

/// The seal that opens an existing keyring. `Ok(None)`: start sealed (a passphrase seal with no
/// passphrase given); an HSM key that is gone is returned as the error it is, for the caller to
/// start sealed with.
pub async fn open_seal(
    config: &Config,
    inputs: &SealInputs,
    records: &[KekRecord],
) -> anyhow::Result<Result<Option<Arc<dyn Seal>>, SealError>> {
    match &config.seal {
        SealConfig::File { root_key_file } => Ok(Ok(Some(
            Arc::new(FileSeal::open(root_key_file)?) as Arc<dyn Seal>,
        ))),
        SealConfig::Passphrase => {
            let Some(pass) = inputs.passphrase.clone() else {
                return Ok(Ok(None));
            };
            let mut descs: Vec<&str> = records
                .iter()
                .map(|r| r.seal.as_str())
                .filter(|d| KdfParams::is_descriptor(d))
                .collect();
            descs.sort_unstable();
            descs.dedup();
            let Some(desc) = descs.first() else {
                bail!(
                    "the keyring is not sealed by a passphrase; see `keysafe admin seal migrate`"
                );
            };
            if descs.len() > 1 {
                bail!(
                    "the keyring has rows for several passphrases (an interrupted seal migration); finish it with `keysafe admin seal migrate`"
                );
            }
            let params = KdfParams::parse(desc)?;
            let seal = blocking(move || PassphraseSeal::derive(pass.as_bytes(), params)).await??;
            Ok(Ok(Some(Arc::new(seal) as Arc<dyn Seal>)))
        }
        SealConfig::Pkcs11 { .. } => {
            let settings = pkcs11_settings(&config.seal)?.context("pkcs11 settings")?;
            match blocking(move || Pkcs11Seal::open(&settings, false)).await? {
                Ok(s) => Ok(Ok(Some(Arc::new(s) as Arc<dyn Seal>))),
                Err(e @ SealError::HsmKeyMissing { .. }) => Ok(Err(e)),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Creates the seal for a new keyring (`init`, `seal migrate`): a new root key file, fresh
/// Argon2id parameters, or the HSM key (generated if the token has none by that label).
pub async fn create_seal(
    config: &Config,
    passphrase: Option<Zeroizing<String>>,
) -> anyhow::Result<Arc<dyn Seal>> {
    Ok(match &config.seal {
        SealConfig::File { root_key_file } => Arc::new(FileSeal::create(root_key_file)?),
        SealConfig::Passphrase => {
            let pass = passphrase.context(
                "the passphrase seal needs a passphrase: --passphrase-file, KEYSAFE_PASSPHRASE or a terminal to type it on",
            )?;
            if pass.chars().count() < 12 {
                bail!("the passphrase must be at least 12 characters long");
            }
            let params = KdfParams::generate()?;
            Arc::new(blocking(move || PassphraseSeal::derive(pass.as_bytes(), params)).await??)
        }
        SealConfig::Pkcs11 { .. } => {
            let settings = pkcs11_settings(&config.seal)?.context("pkcs11 settings")?;
            Arc::new(blocking(move || Pkcs11Seal::open(&settings, true)).await??)
        }
    })
}
