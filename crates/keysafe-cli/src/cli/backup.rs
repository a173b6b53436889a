//! Backups: `keysafe backup` (key pair, verification), `keysafe restore` and
//! `keysafe admin backup create`.

use super::seal::SealSecretArgs;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Make an age X25519 key pair for backups (like `age-keygen`): the identity goes to FILE
    /// (mode 0600), the recipient to standard output.
    #[command(after_help = "Example:\n  keysafe backup keygen -o backup-key.txt")]
    Keygen {
        /// Where to write the identity (must not exist).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Decrypt a backup, check its integrity and print its manifest.
    #[command(
        after_help = "Example:\n  keysafe backup verify keysafe.age --identity backup-key.txt"
    )]
    Verify {
        /// The backup file.
        file: PathBuf,
        /// An age identity file (repeatable).
        #[arg(long = "identity", required = true)]
        identities: Vec<PathBuf>,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long = "from")]
    pub from: PathBuf,
    /// An age identity file (repeatable).
    #[arg(long = "identity", required = true)]
    pub identities: Vec<PathBuf>,
    /// The data directory to create (must be missing or empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// A new listen address (the certificate is re-issued with the same key).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A new host name (the certificate is re-issued with the same key).
    #[arg(long)]
    pub hostname: Option<String>,
    /// The root key file, when the backup was made without --include-root-key (file seal).
    #[arg(long)]
    pub root_key: Option<PathBuf>,
    /// Restore into this storage instead of the backup's: a database file path (relative to the
    /// data directory), sqlite:PATH, or postgres://USER@HOST[,HOST2...]/DATABASE?... (an empty
    /// database keysafe owns). The way to move a keysafe from SQLite onto PostgreSQL.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// A file holding the database password (mode 0600), for --storage that needs one.
    #[arg(long, value_name = "FILE", requires = "storage")]
    pub storage_password_file: Option<PathBuf>,
    /// HSM seal: the PKCS#11 module to load on this host. A backup names the module its server
    /// used; restore never loads a library named by a backup: confirm it (or name another) here.
    #[arg(long, value_name = "PATH")]
    pub pkcs11_module: Option<PathBuf>,
    #[command(flatten)]
    pub secrets: SealSecretArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AdminBackupCommand {
    /// Write an encrypted, signed backup: with --data-dir, on the server's host from its data
    /// directory (the server may keep running); with --home, over the API.
    #[command(
        after_help = "Examples:\n  keysafe admin --data-dir /var/lib/keysafe backup create --recipient age1... -o keysafe.age\n  keysafe admin --home ./admin backup create --recipient age1... -o keysafe.age"
    )]
    Create {
        /// An age X25519 recipient (`age1...`), repeatable.
        #[arg(long = "recipient", required = true)]
        recipients: Vec<String>,
        /// Include the root key file (file seal). Anyone with the backup and an identity can then
        /// read every deposit. Over the API only to recipients pinned in keysafe.toml.
        #[arg(long)]
        include_root_key: bool,
        /// Include the administrator identity `init` made (DIR/admin). Over the API only to
        /// recipients pinned in keysafe.toml.
        #[arg(long)]
        include_admin_identity: bool,
        /// Over the API: include the server's TLS private key (only to recipients pinned in
        /// keysafe.toml). A backup made with --data-dir always carries it.
        #[arg(long)]
        include_tls_key: bool,
        /// Where to write the backup (created with mode 0600; must not exist).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// With --data-dir: the passphrase or HSM PIN that opens the keyring, whose audit key
        /// signs the backup.
        #[command(flatten)]
        secrets: SealSecretArgs,
    },
}
