//! Command-line grammar. Each subcommand's help ends with an example.
//!
//! The top-level parser and the list of subcommands are here; the arguments of each group of
//! subcommands are in a submodule and re-exported here, so every type is `crate::cli::Name`.

mod admin;
mod bench;
mod client;
mod kms;
mod server;
mod tenants;
// Seals, keyring rotation and backups.
mod backup;
mod seal;

pub use admin::{
    AdminArgs, AdminCommand, AuditCommand, ClusterCommand, IntegrityCommand, RecoverAdminArgs,
    RecoverTarget, TlsCommand,
};
pub use backup::{AdminBackupCommand, BackupCommand, RestoreArgs};
pub use bench::{BenchArgs, BenchOp};
pub use client::{
    CacheCommand, ClientArgs, GetArgs, GroupCommand, LsArgs, NameArgs, PurgeArgs, PutArgs,
    RegisterArgs, ShareArgs, UnshareArgs,
};
pub use kms::KmsArgs;
pub use seal::{KeyringCommand, MigrateTo, SealArgs, SealCommand, SealKind, SealSecretArgs};
pub use server::{InitArgs, ServeArgs, StorageArgs};
pub use tenants::{AdminGroupCommand, ClientCommand, OrgCommand, SetAuthMode};

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "keysafe",
    version,
    about = "keysafe: a key trustee server, its administration and its client",
    after_help = "Quick start:\n  keysafe serve --data-dir ./keysafe-data          # initialises on first start\n  keysafe admin --data-dir ./keysafe-data org add acme\n  keysafe register --server https://127.0.0.1:11371 --org acme --auth SECRET\n  echo -n s3cret | keysafe put db/master-key\n  keysafe get db/master-key"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new data directory: configuration, TLS certificate, root key, database, admin identity.
    #[command(
        after_help = "Example:\n  keysafe init --data-dir /var/lib/keysafe --listen 0.0.0.0:11371 --hostname keysafe.example.com"
    )]
    Init(InitArgs),
    /// Run the server (initialising an empty data directory first).
    #[command(
        after_help = "Example:\n  keysafe serve --data-dir ./keysafe-data\n  keysafe serve --print-default-config > keysafe.toml"
    )]
    Serve(ServeArgs),
    /// Administer organisations and clients (needs an administrator identity).
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data org add acme --contact ops@acme.example\n  keysafe admin --data-dir ./keysafe-data client list --state pending"
    )]
    Admin(AdminArgs),
    /// Register this host as a client: generate its key pair and register it into an organisation.
    #[command(
        after_help = "Examples:\n  keysafe register --server https://keysafe.example.com:11371 --org acme --auth-file secret.txt --name web-1\n  keysafe register --server https://ks1.example.com:11371 --server https://ks2.example.com:11371 --org acme --auth-file secret.txt"
    )]
    Register(RegisterArgs),
    /// Store a new version of a deposit, read from FILE or standard input.
    #[command(
        after_help = "Example:\n  keysafe put db/master-key key.bin\n  head -c 32 /dev/urandom | keysafe put db/master-key -"
    )]
    Put(PutArgs),
    /// Fetch a deposit (the current version, or --version N) to standard output or -o FILE.
    #[command(
        after_help = "Example:\n  keysafe get db/master-key -o key.bin\n  keysafe get db/master-key --version 2 > old-key.bin\n  keysafe get db/master-key --no-cache > key.bin"
    )]
    Get(GetArgs),
    /// List your deposits, optionally those whose name starts with PREFIX.
    #[command(after_help = "Example:\n  keysafe ls db/\n  keysafe ls --deleted --json")]
    Ls(LsArgs),
    /// List the versions of a deposit.
    #[command(after_help = "Example:\n  keysafe versions db/master-key")]
    Versions(NameArgs),
    /// Soft-delete a deposit (undelete restores it).
    #[command(after_help = "Example:\n  keysafe rm db/master-key")]
    Rm(NameArgs),
    /// Restore a soft-deleted deposit.
    #[command(after_help = "Example:\n  keysafe undelete db/master-key")]
    Undelete(NameArgs),
    /// Destroy every version of a deposit, irrecoverably.
    #[command(after_help = "Example:\n  keysafe purge db/old-key --yes")]
    Purge(PurgeArgs),
    /// Show this client's registration.
    #[command(after_help = "Example:\n  keysafe whoami --json")]
    Whoami(ClientArgs),
    /// Show this client's servers (which answer, which would be used), its cache and identity.
    #[command(
        after_help = "Examples:\n  keysafe status\n  keysafe status --json | jq '.servers[] | select(.answers | not)'"
    )]
    Status(ClientArgs),
    /// Inspect or empty the local cache of fetched deposits.
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe cache ls\n  keysafe cache clear"
    )]
    Cache(CacheCommand),
    /// Grant a client or group access to a deposit (re-encrypts every version for it).
    #[command(
        after_help = "Examples:\n  keysafe share db/master-key --with 3f1c...e9\n  keysafe share hadoop/zone-key --with group:kms --write"
    )]
    Share(ShareArgs),
    /// Revoke a client's or group's access (re-encrypts every version without it).
    #[command(
        after_help = "Example:\n  keysafe unshare db/master-key --with 3f1c...e9\n\nA reader that fetched the deposit before keeps what it fetched; rotate the key itself if that matters."
    )]
    Unshare(UnshareArgs),
    /// Show a deposit's access-control list and the recipients it is encrypted to.
    #[command(
        after_help = "Example:\n  keysafe acl db/master-key\n  keysafe acl zone-key --owner group:kms --json"
    )]
    Acl(NameArgs),
    /// List the deposits other clients shared with this client or its groups.
    #[command(after_help = "Example:\n  keysafe shared --json")]
    Shared(ClientArgs),
    /// Groups this client belongs to: list, show, create, admit a member.
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe group ls\n  keysafe group admit kms 3f1c...e9"
    )]
    Group(GroupCommand),
    /// Check a backup file: decrypt it, verify every checksum and print what is inside.
    #[command(
        after_help = "Example:\n  keysafe backup verify keysafe-2026-11-28.age --identity backup-key.txt"
    )]
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Rebuild a data directory from a backup, on any host, under any name and address.
    #[command(
        after_help = "Example:\n  keysafe restore --from keysafe.age --identity backup-key.txt --data-dir /var/lib/keysafe --listen 10.0.0.7:11371 --hostname keysafe2.example.com"
    )]
    Restore(RestoreArgs),
    /// Load generator: drive get or put over mutual TLS against a running server.
    #[command(
        after_help = "Example:\n  keysafe bench --home ./bench-client --op get --connections 64 --duration 10s"
    )]
    Bench(BenchArgs),
    /// Run the Hadoop KMS gateway (KMS v1 under /kms/v1/) as the registered client in --home.
    #[command(
        after_help = "Example:\n  keysafe kms --home /etc/keysafe/kms-1 --listen 127.0.0.1:9600 --config kms.toml\n  hadoop key list -provider kms://http@127.0.0.1:9600/kms"
    )]
    Kms(KmsArgs),
    /// Print a shell completion script (for packaging: bash, zsh, fish, elvish, powershell).
    #[command(
        hide = true,
        after_help = "Example:\n  keysafe completions bash > /usr/share/bash-completion/completions/keysafe"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page for keysafe and each of its subcommands into DIR (for packaging).
    #[command(hide = true, after_help = "Example:\n  keysafe man target/man")]
    Man {
        /// The directory to write `keysafe.1`, `keysafe-init.1`, ... into (created if missing).
        dir: PathBuf,
    },
    /// Encrypted directories (gocryptfs format) whose keys live in keysafe: prepare, mount,
    /// process access rules.
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe volume prepare /srv/db.enc /srv/db --recovery group:recovery\n  keysafe volume mount /srv/db.enc /srv/db\n  keysafe volume status --json"
    )]
    Volume(crate::cmd::volume::VolumeCommand),
    /// LUKS2 disks with a key slot whose key lives in keysafe: bind, unlock, unbind.
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe luks bind /dev/sdb1 --name data --recovery group:recovery\n  keysafe luks unlock /dev/sdb1 data"
    )]
    Luks(crate::cmd::luks::LuksCommand),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use clap::CommandFactory;

    /// Walks the command tree; returns the commands whose help has no "Example(s):" section
    /// with at least one `keysafe ...` line, and how many commands were visited.
    fn lacking_examples(root: &clap::Command) -> (Vec<String>, usize) {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>, seen: &mut usize) {
            for sub in cmd.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                let path = format!("{path} {}", sub.get_name());
                *seen += 1;
                let help = sub
                    .get_after_help()
                    .or_else(|| sub.get_after_long_help())
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                let titled = help.contains("Example:") || help.contains("Examples:");
                let shows = help.lines().any(|l| l.trim_start().starts_with("keysafe "));
                if !(titled && shows) {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing, seen);
            }
        }
        let mut missing = Vec::new();
        let mut seen = 0;
        walk(root, root.get_name(), &mut missing, &mut seen);
        (missing, seen)
    }

    /// Every command and subcommand, at every depth, shows an example in its `--help`.
    #[test]
    fn every_command_has_an_example() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let (missing, seen) = lacking_examples(&cli);
        assert!(seen > 20, "the walk found only {seen} commands");
        assert!(
            missing.is_empty(),
            "commands without an example: {missing:?}"
        );
    }

    /// The check itself can fail: a nested command without an example is reported.
    #[test]
    fn the_example_check_notices_a_missing_example() {
        let cmd = clap::Command::new("keysafe")
            .subcommand(
                clap::Command::new("with")
                    .after_help("Example:\n  keysafe with")
                    .subcommand(clap::Command::new("inner")),
            )
            .subcommand(clap::Command::new("titled").after_help("Example: none"))
            .subcommand(clap::Command::new("without"));
        let (missing, seen) = lacking_examples(&cmd);
        assert_eq!(seen, 4);
        assert_eq!(
            missing,
            ["keysafe with inner", "keysafe titled", "keysafe without"]
        );
    }
}
