//! Where passphrases come from: a file (`--passphrase-file`, mode 0600), the environment
//! (`KEYSAFE_PASSPHRASE`), or a prompt, and only when standard input is a terminal.

use crate::cli::{SealArgs, SealKind};
use keysafe_server::config::SealTemplate;
use keysafe_server::seal::{PASSPHRASE_ENV, read_secret_file};
use std::io::IsTerminal;
use std::path::Path;
use zeroize::Zeroizing;

/// The passphrase from the file, the environment or a prompt; `None` when none is available.
pub fn passphrase(
    file: Option<&Path>,
    prompt: &str,
    confirm: bool,
) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Some(f) = file {
        return read_secret_file(f).map(Some);
    }
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        return Ok(Some(Zeroizing::new(p)));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let first = Zeroizing::new(rpassword::prompt_password(prompt)?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("Repeat the passphrase: ")?);
        if *again != *first {
            anyhow::bail!("the passphrases do not match");
        }
    }
    Ok(Some(first))
}

/// Whether [`passphrase`] could prompt on the terminal (nothing else given): a progress
/// display must stay off then, or it would draw over the prompt.
pub fn may_prompt(file: Option<&Path>) -> bool {
    file.is_none() && std::env::var_os(PASSPHRASE_ENV).is_none() && std::io::stdin().is_terminal()
}

/// The `[seal]` template for `init` from the command line.
pub fn template(a: &SealArgs) -> SealTemplate {
    SealTemplate {
        kind: match a.kind {
            SealKind::File => "file",
            SealKind::Passphrase => "passphrase",
            SealKind::Pkcs11 => "pkcs11",
        }
        .into(),
        pkcs11_module: a.pkcs11_module.clone(),
        pkcs11_token: a.pkcs11_token.clone(),
        pkcs11_key: a.pkcs11_key.clone(),
        pkcs11_pin_file: a
            .secrets
            .pkcs11_pin_file
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        pkcs11_mode: a.pkcs11_mode.clone(),
        root_key_file: a
            .root_key_file
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
    }
}

/// The passphrase for `init` (asked twice on a terminal).
pub fn init_passphrase(a: &SealArgs) -> anyhow::Result<Option<Zeroizing<String>>> {
    if a.kind != SealKind::Passphrase {
        return Ok(None);
    }
    passphrase(
        a.secrets.passphrase_file.as_deref(),
        "New keysafe passphrase: ",
        true,
    )
}

/// The cluster's passphrase for `init --join` (asked once: it must open the keyring).
pub fn join_passphrase(a: &SealArgs) -> anyhow::Result<Option<Zeroizing<String>>> {
    if a.kind != SealKind::Passphrase {
        return Ok(None);
    }
    passphrase(
        a.secrets.passphrase_file.as_deref(),
        "The cluster's keysafe passphrase: ",
        false,
    )
}
