//! Arguments of `keysafe init` and `keysafe serve`: the data directory, listen address, host
//! name and storage of a server.

use super::seal::SealArgs;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The data directory to create (must be missing or empty).
    #[arg(long, env = "KEYSAFE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address and port to listen on.
    #[arg(long, default_value = keysafe_server::config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Host name clients use; goes into the certificate.
    #[arg(long, default_value = "localhost")]
    pub hostname: String,
    /// Print what was created as JSON.
    #[arg(long)]
    pub json: bool,
    /// Join the cluster whose database --storage names, as another node: nothing is created in
    /// the database; the seal's flags must open its keyring (for the file seal,
    /// --root-key-file names a copy of the cluster's root key), and the node serves the
    /// cluster's TLS identity, so clients need no new pin. See docs/cluster.md.
    #[arg(long)]
    pub join: bool,
    #[command(flatten)]
    pub seal: SealArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Where the server keeps its state (init).
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// The storage: a database file path (relative to the data directory) or a URL
    /// (sqlite:PATH, or postgres://USER@HOST[,HOST2...]/DATABASE?... for a database keysafe owns).
    /// Never put a password in it: use --storage-password-file or KEYSAFE_STORAGE_PASSWORD.
    #[arg(long, value_name = "URL", default_value = keysafe_store::config::DEFAULT_URL)]
    pub storage: String,
    /// A file holding the database password (mode 0600), for storage that needs one.
    #[arg(long, value_name = "FILE")]
    pub storage_password_file: Option<PathBuf>,
}

impl StorageArgs {
    /// What `init` writes into `[storage]` (a password file given here is relative to the
    /// current directory, so it is written as an absolute path).
    pub fn template(&self) -> std::io::Result<keysafe_server::config::StorageTemplate> {
        Ok(keysafe_server::config::StorageTemplate {
            url: keysafe_store::StorageConfig::url_from_arg(&self.storage),
            password_file: self
                .storage_password_file
                .as_deref()
                .map(std::path::absolute)
                .transpose()?,
        })
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The data directory (initialised on first start if missing or empty).
    #[arg(
        long,
        env = "KEYSAFE_DATA_DIR",
        required_unless_present = "print_default_config"
    )]
    pub data_dir: Option<PathBuf>,
    /// Override server.listen from keysafe.toml (also used when initialising).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Host name for the certificate when initialising.
    #[arg(long, default_value = "localhost")]
    pub hostname: String,
    /// Print the documented default configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
    /// Override metrics.listen from keysafe.toml: where Prometheus metrics are served (plain
    /// HTTP, `/metrics`).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// The seal when initialising, and the passphrase / PIN sources at start.
    #[command(flatten)]
    pub seal: SealArgs,
}
