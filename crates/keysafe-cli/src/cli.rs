//! Command-line grammar. Each subcommand's help ends with an example.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
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

// --- Seals, keyring rotation and backups ---

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

// --- end of seals, keyring rotation and backups ---

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
pub enum AdminGroupCommand {
    /// Create a group with its first members (a new identity is wrapped for each).
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data group add kms --org acme --member 3f1c...e9 --member 77ab...01"
    )]
    Add {
        name: String,
        #[arg(long)]
        org: String,
        /// A member's fingerprint (repeatable; at least one).
        #[arg(long = "member", required = true)]
        members: Vec<String>,
    },
    /// Add a member; a current member then runs `keysafe group admit` to hand it the keys.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data group add-member kms --org acme 77ab...01"
    )]
    AddMember {
        name: String,
        #[arg(long)]
        org: String,
        fingerprint: String,
    },
    /// Remove a member and rotate the group identity for everything written afterwards.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data group remove-member kms --org acme 77ab...01"
    )]
    RemoveMember {
        name: String,
        #[arg(long)]
        org: String,
        fingerprint: String,
    },
    /// List groups, optionally of one organisation.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data group list --org acme"
    )]
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Delete a group with its epochs and wrapped keys (its members stay). Refused while it
    /// owns deposits or a deposit is shared with it. Without --yes, only says what it would
    /// delete (exit 2).
    #[command(after_help = "Example:
  keysafe admin --data-dir ./keysafe-data group delete kms --org acme --yes")]
    Delete {
        name: String,
        #[arg(long)]
        org: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
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
pub enum OrgCommand {
    /// Create an organisation; prints its auth secret once.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data org add acme --contact ops@acme.example --json"
    )]
    Add {
        name: String,
        /// A contact e-mail address (repeatable).
        #[arg(long = "contact")]
        contacts: Vec<String>,
    },
    /// Mint a single-use, expiring registration token for an organisation (printed once).
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data org token acme --ttl 1h\n  keysafe register --server https://ks.example.com:11371 --org acme --auth-file token.txt"
    )]
    Token {
        name: String,
        /// How long the token stays valid (at most 30 days).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// List organisations.
    #[command(after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data org list")]
    List,
    /// Rotate an organisation's auth secret, or switch it to approval mode.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data org set-auth acme --random\n  keysafe admin --data-dir ./keysafe-data org set-auth acme --approval"
    )]
    SetAuth {
        name: String,
        #[command(flatten)]
        mode: SetAuthMode,
    },
    /// Delete an organisation that has no clients and no groups left, with its registration
    /// tokens. Without --yes, only says what it would delete (exit 2).
    #[command(after_help = "Example:
  keysafe admin --data-dir ./keysafe-data org delete acme
  keysafe admin --data-dir ./keysafe-data org delete acme --yes")]
    Delete {
        name: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
    /// List an organisation's registration tokens that were never used (ids, creation,
    /// expiry; never the tokens).
    #[command(after_help = "Example:
  keysafe admin --data-dir ./keysafe-data org tokens acme")]
    Tokens { name: String },
    /// Revoke an unused registration token by its id (or an unambiguous prefix of at least 6
    /// characters), or all of them.
    #[command(after_help = "Examples:
  keysafe admin --data-dir ./keysafe-data org token-revoke acme 3fa9c2
  keysafe admin --data-dir ./keysafe-data org token-revoke acme --all")]
    TokenRevoke {
        name: String,
        /// The token's id as `org tokens` lists it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every unused token of the organisation.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SetAuthMode {
    /// Generate a new random secret (printed once).
    #[arg(long)]
    pub random: bool,
    /// Use this secret (at least 16 characters). Prefer --secret-file: arguments show in `ps`.
    #[arg(long)]
    pub secret: Option<String>,
    /// Read the secret from this file.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Require an administrator's approval for every registration.
    #[arg(long)]
    pub approval: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List clients, optionally by organisation and state.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client list --org acme --state pending"
    )]
    List {
        #[arg(long)]
        org: Option<String>,
        /// pending, active, disabled or suspected-clone.
        #[arg(long)]
        state: Option<String>,
        /// Show one page of at most this many (the command says how to get the next one);
        /// without it, every client, page after page.
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this cursor (the `next_after` a page printed).
        #[arg(long, requires = "limit")]
        after: Option<String>,
    },
    /// Approve a pending client.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client approve 3f1c...e9"
    )]
    Approve { fingerprint: String },
    /// Disable a client (it is refused everywhere until enabled).
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client disable 3f1c...e9"
    )]
    Disable { fingerprint: String },
    /// Re-enable a disabled client.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client enable 3f1c...e9"
    )]
    Enable { fingerprint: String },
    /// Make an active client a server administrator.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client promote 3f1c...e9"
    )]
    Promote { fingerprint: String },
    /// Make a server administrator an ordinary client again.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client demote 3f1c...e9"
    )]
    Demote { fingerprint: String },
    /// Clear a client's sequenced token (and a suspected-clone lock); its next request gets a new one.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client reset-token 3f1c...e9\n\nFirst make sure the copy that caused the lock is gone: whichever copy talks first afterwards wins."
    )]
    ResetToken { fingerprint: String },
    /// Disable clients that registered longer ago than DURATION and never used their registration.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client disable-unactivated --older-than 30d"
    )]
    DisableUnactivated {
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Only list the clients it would disable.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a client, with its grants, group memberships and wrapped group keys. Refused
    /// while it owns deposits, is the only member holding a group's current key, or is the
    /// last active administrator. Without --yes, only says what it would delete (exit 2).
    #[command(after_help = "Example:
  keysafe admin --data-dir ./keysafe-data client delete 3f1c...e9
  keysafe admin --data-dir ./keysafe-data client delete 3f1c...e9 --yes")]
    Delete {
        fingerprint: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOp {
    /// Fetch the current version of a deposit.
    Get,
    /// Store a new version of a deposit (durable before it is acknowledged).
    Put,
    /// `GET /?a=fingerprint`: the same TLS, HTTP and middleware path with no database and no
    /// crypto; the ceiling the other operations are compared with.
    Baseline,
    /// Store `--keys` deposits once each over `--connections` connections (only those not
    /// there yet: a second run resumes), then report the rate; no measured phase. Seeds large
    /// scale runs through the real server.
    Seed,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A registered client home to drive the load as.
    #[arg(long, env = "KEYSAFE_HOME")]
    pub home: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub op: BenchOp,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: std::time::Duration,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// How many distinct deposit names to spread the load over.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

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
