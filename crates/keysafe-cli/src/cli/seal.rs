//! How the keyring is sealed: the seal options `init` and `serve` take, where the passphrase and
//! HSM PIN come from, and `keysafe admin keyring` and `keysafe admin seal`.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SealKind {
    /// A 256-bit root key in a file (mode 0600).
    File,
    /// A key derived with Argon2id from an operator passphrase.
    Passphrase,
    /// A non-extractable AES key in an HSM token over PKCS#11.
    Pkcs11,
}

/// How the keyring is sealed (init, and `seal migrate --to`).
#[derive(Debug, Clone, Args)]
pub struct SealArgs {
    /// The seal: file, passphrase or pkcs11.
    #[arg(long = "seal", value_enum, default_value = "file")]
    pub kind: SealKind,
    #[command(flatten)]
    pub secrets: SealSecretArgs,
    /// PKCS#11 module (shared library) of the HSM.
    #[arg(long, default_value = keysafe_server::config::DEFAULT_PKCS11_MODULE)]
    pub pkcs11_module: PathBuf,
    /// Label of the HSM token.
    #[arg(long, default_value = "keysafe")]
    pub pkcs11_token: String,
    /// Label of the AES key in the token (created if absent).
    #[arg(long, default_value = "keysafe-seal")]
    pub pkcs11_key: String,
    /// `keyring` (the HSM opens the keyring at start) or `per-deposit` (every data key too).
    #[arg(long, default_value = "keyring", value_parser = ["keyring", "per-deposit"])]
    pub pkcs11_mode: String,
    /// The file seal's root key when joining a cluster (--join): a copy of the cluster's root
    /// key (mode 0600), used where it is.
    #[arg(long, value_name = "FILE")]
    pub root_key_file: Option<PathBuf>,
}

/// Where the passphrase and the HSM PIN come from.
#[derive(Debug, Clone, Args)]
pub struct SealSecretArgs {
    /// Read the passphrase from this file (mode 0600). Otherwise KEYSAFE_PASSPHRASE, or a prompt
    /// when standard input is a terminal.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// A file (mode 0600) holding the HSM user PIN; otherwise KEYSAFE_PKCS11_PIN is used.
    #[arg(long)]
    pub pkcs11_pin_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum KeyringCommand {
    /// Versions, data keys per version and re-wrap progress.
    #[command(after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data keyring status")]
    Status,
    /// Add a key-encryption-key version; new data keys use it at once, a background job
    /// re-wraps the existing ones.
    #[command(
        after_help = "Examples:\n  keysafe admin --data-dir ./keysafe-data keyring rotate\n  keysafe admin --data-dir ./keysafe-data keyring rotate --wait"
    )]
    Rotate {
        /// Wait until the background job has re-wrapped every data key (progress on a terminal).
        #[arg(long)]
        wait: bool,
    },
    /// Delete a version that no data key uses any more.
    #[command(after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data keyring retire 1")]
    Retire { version: u32 },
}

#[derive(Debug, Subcommand)]
pub enum SealCommand {
    /// Move the keyring to another seal (or another HSM key label), offline: stop the server
    /// first. Needs --data-dir.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir /var/lib/keysafe seal migrate --to pkcs11 --pkcs11-token keysafe --pkcs11-key seal-2027 --pkcs11-pin-file /etc/keysafe/hsm.pin"
    )]
    Migrate {
        #[command(flatten)]
        to: MigrateTo,
        /// The current passphrase, when the current seal is a passphrase.
        #[arg(long)]
        current_passphrase_file: Option<PathBuf>,
        /// Undo an interrupted migration instead of finishing it (running the same command
        /// again finishes it).
        #[arg(long, conflicts_with = "kind")]
        rollback: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct MigrateTo {
    /// The new seal.
    #[arg(long = "to", value_enum, required_unless_present = "rollback")]
    pub kind: Option<SealKind>,
    /// Read the new passphrase from this file.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// A file holding the HSM user PIN (default: the configured one, or KEYSAFE_PKCS11_PIN).
    #[arg(long)]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// PKCS#11 module (default: the configured one).
    #[arg(long)]
    pub pkcs11_module: Option<PathBuf>,
    /// HSM token label (default: the configured one).
    #[arg(long)]
    pub pkcs11_token: Option<String>,
    /// HSM key label: a new label rotates the HSM key.
    #[arg(long)]
    pub pkcs11_key: Option<String>,
    /// `keyring` or `per-deposit` (default: the configured one).
    #[arg(long, value_parser = ["keyring", "per-deposit"])]
    pub pkcs11_mode: Option<String>,
}
