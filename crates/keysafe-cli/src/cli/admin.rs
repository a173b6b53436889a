//! `keysafe admin`: its options, its subcommands, and those that look after the server itself
//! (TLS certificate, audit trail, integrity, administrator recovery, cluster).

use super::backup::AdminBackupCommand;
use super::seal::{KeyringCommand, SealCommand, SealSecretArgs};
use super::tenants::{AdminGroupCommand, ClientCommand, OrgCommand};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// A server data directory: use the administrator identity `init` made there.
    #[arg(long, env = "KEYSAFE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// An administrator's client home (takes precedence over --data-dir).
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Organisations (tenants).
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe admin --data-dir ./keysafe-data org add acme\n  keysafe admin --data-dir ./keysafe-data org list --json"
    )]
    Org(OrgCommand),
    /// Registered clients.
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe admin --data-dir ./keysafe-data client list --state pending\n  keysafe admin --data-dir ./keysafe-data client approve 3f1c...e9"
    )]
    Client(ClientCommand),
    /// Groups of clients sharing an encryption identity (for example several KMS gateways).
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe admin --data-dir ./keysafe-data group add kms --org acme --member 3f1c...e9\n  keysafe admin --data-dir ./keysafe-data group list --org acme"
    )]
    Group(AdminGroupCommand),
    /// Unseal a server that started sealed (passphrase seal).
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data unseal --passphrase-file pass.txt"
    )]
    Unseal {
        /// Read the passphrase from this file (otherwise KEYSAFE_PASSPHRASE or a prompt).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Keyring versions, rotation and retirement.
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe admin --data-dir ./keysafe-data keyring status\n  keysafe admin --data-dir ./keysafe-data keyring rotate"
    )]
    Keyring(KeyringCommand),
    /// Change the seal (offline).
    #[command(
        subcommand,
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data seal migrate --to passphrase --passphrase-file pass.txt"
    )]
    Seal(SealCommand),
    /// Backups of the running server.
    #[command(
        subcommand,
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data backup create --recipient age1... -o keysafe.age"
    )]
    Backup(AdminBackupCommand),
    /// The server's TLS certificate (offline, on the data directory).
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe admin --data-dir /var/lib/keysafe tls renew\n  keysafe admin --data-dir /var/lib/keysafe tls renew --hostname ks1.example.com --hostname 10.0.0.5"
    )]
    Tls(TlsCommand),
    /// The tamper-evident audit trail: verify it, export it.
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe admin --data-dir ./keysafe-data audit verify\n  keysafe admin --data-dir ./keysafe-data audit export --since 2026-11-01T00:00:00Z --output audit.jsonl"
    )]
    Audit(AuditCommand),
    /// The authenticated access rows (client roles and states, grants, deposit headers, group
    /// members and epochs): verify every one (ADR 0013).
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe admin --home ./admin-home integrity verify\n  keysafe admin --data-dir /var/lib/keysafe integrity verify --json   (offline, with the seal)"
    )]
    Integrity(IntegrityCommand),
    /// Recover from a locked last administrator, offline, on the server's data directory (no
    /// API call, no administrator identity needed: holding the data directory is the proof).
    /// Either restores an existing administrator client (active, token cleared) or issues a
    /// new administrator identity into a new client home. Refused while an active
    /// administrator exists, unless --force. Audited in the chain.
    #[command(
        name = "recover-admin",
        after_help = "Examples:
  keysafe admin --data-dir /var/lib/keysafe recover-admin --new-home /root/keysafe-admin
  keysafe admin --data-dir /var/lib/keysafe recover-admin --reset 3f1c...e9 --force"
    )]
    RecoverAdmin(RecoverAdminArgs),
    /// The nodes of a cluster on one PostgreSQL database, and its standbys (docs/cluster.md).
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe admin --data-dir /var/lib/keysafe cluster status\n  keysafe admin --data-dir /var/lib/keysafe cluster status --json\n  keysafe admin --data-dir /var/lib/keysafe cluster remove node-3f1c0a9e77b2"
    )]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Re-issue the self-signed server certificate for the same key (the fingerprint clients
    /// pinned does not change). A running server picks the new file up by itself within
    /// server.tls_reload_interval, or at once on SIGHUP (systemctl reload keysafe).
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir /var/lib/keysafe tls renew --hostname ks1.example.com --hostname ks1 --hostname 10.0.0.5"
    )]
    Renew {
        /// A DNS name or IP address for the certificate (repeat for several; the first is also
        /// its common name). Default: the names of the current certificate.
        #[arg(long = "hostname", value_name = "NAME")]
        hostnames: Vec<String>,
        /// How long the new certificate is valid.
        #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
        validity: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Fetch the chain and its signed checkpoints and check them here, against the server's
    /// public audit key; report the first entry where the chain breaks (exit 7).
    #[command(
        after_help = "Examples:\n  keysafe admin --data-dir ./keysafe-data audit verify\n  keysafe admin --data-dir ./keysafe-data audit verify --from 1000 --json"
    )]
    Verify {
        /// Start at this entry (its predecessor's hash is taken on trust).
        #[arg(long)]
        from: Option<u64>,
        /// Check against this public key (64 hex digits, as recorded from
        /// `GET /v1/audit/public-key`) instead of the one the
        /// server publishes.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write entries (and every checkpoint after the first of them) as JSON lines, with their
    /// chain fields, for independent verification (docs/audit.md).
    #[command(
        after_help = "Examples:\n  keysafe admin --data-dir ./keysafe-data audit export --output audit.jsonl\n  keysafe admin --data-dir ./keysafe-data audit export --since 2026-11-01 --output audit.jsonl"
    )]
    Export {
        /// Only from the first entry at or after this time: a date (2026-12-01, midnight UTC)
        /// or an RFC 3339 time (2026-12-01T08:00:00Z). Without it, everything.
        #[arg(long)]
        since: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Retention: archive the entries up to a signed checkpoint into a new file (JSON lines as
    /// `audit export`, checked here before anything is deleted), then delete them from the
    /// server. The server records the prune, with the archive's SHA-256, in the chain; `audit
    /// verify` then proves continuity from that checkpoint. Keep the archive where the
    /// database's administrators cannot change it.
    #[command(
        after_help = "Examples:\n  keysafe admin --data-dir ./keysafe-data audit prune --before 2026-01-01 --archive audit-2025.jsonl\n  keysafe admin --data-dir ./keysafe-data audit prune --through 120000 --archive audit-to-120000.jsonl"
    )]
    Prune {
        /// Prune through the checkpoint at this entry.
        #[arg(long, conflicts_with = "before", required_unless_present = "before")]
        through: Option<u64>,
        /// Prune through the newest checkpoint signed before this time: a date (2026-12-01,
        /// midnight UTC) or an RFC 3339 time.
        #[arg(long)]
        before: Option<String>,
        /// The archive to write (must not exist yet).
        #[arg(long)]
        archive: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum IntegrityCommand {
    /// Check the MAC of every authenticated row, that every deposit header names its newest
    /// version and every group its newest epoch; list each row that fails by kind and key
    /// (exit 7 when any does). With --home: over the API, as an administrator. With --data-dir
    /// alone: offline on the data directory's database, with the seal (running servers may go
    /// on).
    #[command(
        after_help = "Examples:\n  keysafe admin --home ./admin-home integrity verify\n  keysafe admin --data-dir /var/lib/keysafe integrity verify --json   (offline, with the seal)"
    )]
    Verify {
        #[command(flatten)]
        secrets: SealSecretArgs,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "recover_target")]
pub struct RecoverTarget {
    /// Issue a new administrator identity into this new client home (must not exist).
    #[arg(long = "new-home", value_name = "DIR")]
    pub new_home: Option<PathBuf>,
    /// Make this existing client an active administrator again, its token cleared (its next
    /// request is issued a fresh one).
    #[arg(long, value_name = "FINGERPRINT")]
    pub reset: Option<String>,
}

#[derive(Debug, Args)]
pub struct RecoverAdminArgs {
    #[command(flatten)]
    pub target: RecoverTarget,
    /// A name for the new identity (with --new-home).
    #[arg(long, default_value = "recovered-admin", requires = "new_home")]
    pub name: String,
    /// Proceed although an active administrator exists (its home is lost, say).
    #[arg(long)]
    pub force: bool,
    /// The seal's secrets: the recovered row is authenticated under a key only the open seal
    /// gives (file seal: the root key file; HSM: the module and PIN).
    #[command(flatten)]
    pub secrets: SealSecretArgs,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every node (address, version, last heartbeat, seal state, the database host it writes
    /// to) and the database's standbys with their replication lag.
    #[command(
        after_help = "Examples:\n  keysafe admin --data-dir /var/lib/keysafe cluster status\n  keysafe admin --data-dir /var/lib/keysafe --json cluster status"
    )]
    Status,
    /// Forget a node that is gone for good (a running node reappears at its next heartbeat).
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir /var/lib/keysafe cluster remove node-3f1c0a9e77b2"
    )]
    Remove {
        /// The node's id (`cluster status` lists them).
        node: String,
    },
}
