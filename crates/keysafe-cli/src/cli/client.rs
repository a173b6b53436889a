//! The commands a registered client runs: the options they share, `register`, the deposit
//! commands (`put`, `get`, `ls`, `rm`, `purge`, ...), `cache`, `share`, `unshare` and `group`.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Options every client command shares.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The client home (key pair, certificate, client.toml).
    #[arg(long, env = "KEYSAFE_HOME")]
    pub home: Option<PathBuf>,
    /// Print results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Server URL (https://HOST:PORT); repeat for several servers.
    #[arg(long = "server", required = true)]
    pub servers: Vec<String>,
    /// The organisation to join.
    #[arg(long)]
    pub org: String,
    /// The organisation's auth secret. Prefer --auth-file or KEYSAFE_AUTH: arguments show in `ps`.
    #[arg(
        long,
        env = "KEYSAFE_AUTH",
        hide_env_values = true,
        conflicts_with = "auth_file"
    )]
    pub auth: Option<String>,
    /// Read the auth secret from this file (takes precedence over --auth and KEYSAFE_AUTH).
    #[arg(long)]
    pub auth_file: Option<PathBuf>,
    /// A name for this client (host or service name).
    #[arg(long)]
    pub name: Option<String>,
    /// Pin this server fingerprint instead of trusting the first one seen.
    #[arg(long, conflicts_with = "ca_cert")]
    pub server_fingerprint: Option<String>,
    /// Verify the server with this CA certificate (PEM) instead of pinning its fingerprint.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    pub name: String,
    /// The payload file; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// Only store if the current version is N (compare-and-set).
    #[arg(long, value_name = "N", conflicts_with = "create_only")]
    pub if_match: Option<u64>,
    /// Only store if the deposit does not exist yet.
    #[arg(long)]
    pub create_only: bool,
    /// Store the bytes as given, without end-to-end encryption (for payloads you encrypted).
    #[arg(long)]
    pub raw: bool,
    /// Another owner's deposit you may write: a fingerprint or group:NAME.
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub name: String,
    /// A version other than the current one.
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
    /// Write to FILE (created with mode 0600) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Ask a server even if the local cache holds a fresh copy, and never serve a cached copy.
    #[arg(long)]
    pub no_cache: bool,
    /// Output the payload as stored, without decrypting it.
    #[arg(long)]
    pub raw: bool,
    /// A deposit another owner shared with you: a fingerprint or group:NAME.
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    pub prefix: Option<String>,
    /// Include soft-deleted deposits.
    #[arg(long)]
    pub deleted: bool,
    /// The deposits of a group you belong to (group:NAME).
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    pub name: String,
    /// Another owner's deposit: a fingerprint or group:NAME.
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    pub name: String,
    /// A deposit of a group you belong to (group:NAME).
    #[arg(long)]
    pub owner: Option<String>,
    /// Confirm that every version is to be destroyed.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the cached deposit versions (names, versions, sizes, ages; never contents).
    #[command(after_help = "Examples:\n  keysafe cache ls\n  keysafe cache ls --json")]
    Ls(ClientArgs),
    /// Delete every cached deposit of this client home.
    #[command(after_help = "Example:\n  keysafe cache clear")]
    Clear(ClientArgs),
}

#[derive(Debug, Args)]
pub struct ShareArgs {
    pub name: String,
    /// The grantee: a client fingerprint or group:NAME (of your organisation).
    #[arg(long = "with")]
    pub with: String,
    /// Also allow the grantee to store new versions.
    #[arg(long)]
    pub write: bool,
    /// A deposit of a group you belong to (group:NAME).
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct UnshareArgs {
    pub name: String,
    /// The grantee to remove: a client fingerprint or group:NAME.
    #[arg(long = "with")]
    pub with: String,
    /// A deposit of a group you belong to (group:NAME).
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// The groups this client belongs to.
    #[command(after_help = "Example:\n  keysafe group ls --json")]
    Ls(ClientArgs),
    /// A group's members, their keys and its epoch.
    #[command(after_help = "Example:\n  keysafe group show kms")]
    Show {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a group in this client's organisation, with this client as its member (others
    /// join when an administrator adds them and a member admits them).
    #[command(after_help = "Example:\n  keysafe group create kms")]
    Create {
        name: String,
        /// Another member's fingerprint (repeatable; administrators' clients only).
        #[arg(long = "member")]
        members: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Hand the group identities this client holds to a member an administrator added.
    #[command(after_help = "Example:\n  keysafe group admit kms 77ab...01")]
    Admit {
        name: String,
        fingerprint: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}
