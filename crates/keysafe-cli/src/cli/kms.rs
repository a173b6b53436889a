//! Arguments of `keysafe kms`, the Hadoop KMS gateway.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct KmsArgs {
    /// The gateway's client home (a registered, active keysafe client).
    #[arg(long, env = "KEYSAFE_HOME")]
    pub home: Option<PathBuf>,
    /// Where to listen (overrides `listen` in the config file; default 127.0.0.1:9600).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The gateway configuration file (TOML; see docs/kms.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
}
