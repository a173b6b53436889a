//! `keysafe volume ...`: encrypted directories (gocryptfs format) whose passwords live in
//! keysafe, mounted through FUSE, with process access rules. The work is in `keysafe-volume`;
//! these modules parse arguments, print results and run the mount daemon.

mod acl;
mod mount;
mod prepare;
mod status;

use crate::cli::ClientArgs;
use crate::exit::{SecurityError, usage};
use clap::{Args, Subcommand};
use keysafe_client::{ClientHome, KeysafeClient};
use keysafe_volume::VolumeError;
use keysafe_volume::table::{TABLE_FILE, VolumeTable};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create an encrypted directory (gocryptfs format) whose random password is deposited in
    /// keysafe and never written to this host in the clear.
    #[command(
        after_help = "Example:\n  keysafe volume prepare /srv/db.enc /srv/db --name db --recovery group:recovery"
    )]
    Prepare(PrepareArgs),
    /// Take over a directory made by `gocryptfs -init`: its master key is re-wrapped under a
    /// fresh password deposited in keysafe (the old password stops opening it).
    #[command(
        after_help = "Example:\n  keysafe volume adopt /srv/old.enc /srv/old --password-file old-pass.txt --recovery group:recovery"
    )]
    Adopt(AdoptArgs),
    /// Mount a volume: fetch its password from keysafe and serve the clear view (in the
    /// background unless --foreground).
    #[command(
        after_help = "Examples:\n  keysafe volume mount /srv/db.enc /srv/db\n  keysafe volume mount --name db --foreground   # systemd\n  keysafe volume mount --all                    # every volume marked for boot"
    )]
    Mount(MountArgs),
    /// Unmount a volume (by mount point or name).
    #[command(after_help = "Example:\n  keysafe volume umount /srv/db")]
    Umount(UmountArgs),
    /// Volumes, their key deposits, mounts, rules and mode; --integrity checks each against
    /// keysafe.
    #[command(
        after_help = "Examples:\n  keysafe volume status\n  keysafe volume status --json | jq '.[].key_deposit'\n  keysafe volume status --integrity"
    )]
    Status(StatusArgs),
    /// Process access rules: which executables may use which paths of a mounted volume.
    #[command(
        subcommand,
        after_help = "Examples:\n  keysafe volume acl add /srv/db --allow /data --exe /usr/sbin/mysqld --sha256 auto\n  keysafe volume acl list /srv/db\n  keysafe volume acl mode /srv/db permissive"
    )]
    Acl(AclCommand),
    /// Remove a volume from the volume table (its files and its key deposit stay).
    #[command(after_help = "Example:\n  keysafe volume forget db")]
    Forget(ForgetArgs),
}

/// Where the volume table is.
#[derive(Debug, Args)]
pub struct TableArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The volume table (default: volumes.toml in the client home).
    #[arg(long, env = "KEYSAFE_VOLUMES")]
    pub table: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct NewVolumeArgs {
    /// The cipher directory.
    pub cipherdir: PathBuf,
    /// Where it is usually mounted (recorded in the table).
    pub mountpoint: Option<PathBuf>,
    /// The volume's name (default: the cipher directory's name); its key is `volume/NAME`.
    #[arg(long)]
    pub name: Option<String>,
    /// Share the key (read-only) with this principal, for recovery: `group:NAME` or a
    /// fingerprint. Repeatable.
    #[arg(long = "recovery")]
    pub recovery: Vec<String>,
    /// Do not mount it with `keysafe volume mount --all` (at boot).
    #[arg(long)]
    pub no_auto: bool,
    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub new: NewVolumeArgs,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    #[command(flatten)]
    pub new: NewVolumeArgs,
    /// A file holding the volume's current gocryptfs password (otherwise prompted for, or
    /// read from standard input when it is not a terminal).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// CIPHERDIR [MOUNTPOINT], or the volume's name or mount point.
    pub target: Vec<PathBuf>,
    /// The volume's name in the table.
    #[arg(long, conflicts_with = "all")]
    pub name: Option<String>,
    /// Every volume of the table marked for boot.
    #[arg(long)]
    pub all: bool,
    /// Stay in the foreground (for systemd); otherwise a background process serves the mount.
    #[arg(long)]
    pub foreground: bool,
    /// Mount read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Recovery: the deposit holding the password when the volume is not in the table.
    #[arg(long)]
    pub key: Option<String>,
    /// Recovery: the deposit's owner (the lost host's fingerprint) when it is not this client.
    #[arg(long)]
    pub owner: Option<String>,
    /// Print `ready` on standard output once mounted (used by the background launcher).
    #[arg(long, hide = true)]
    pub notify_ready: bool,
    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Args)]
pub struct UmountArgs {
    /// The mount point or volume name.
    pub target: Option<PathBuf>,
    /// Every mounted volume of the table.
    #[arg(long, conflicts_with = "target")]
    pub all: bool,
    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Check every volume: its key is in keysafe and opens its configuration, its mount point
    /// exists and any mount is of this volume, its rules verify. Exits non-zero on a failure.
    #[arg(long)]
    pub integrity: bool,
    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The volume's name.
    pub name: String,
    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allow an executable to use a path prefix of the volume.
    #[command(
        after_help = "Examples:\n  keysafe volume acl add /srv/db --allow / --exe /usr/sbin/mysqld --sha256 auto\n  keysafe volume acl add /srv/db --allow /reports --exe /usr/bin/python3 --script /opt/reports/run.py"
    )]
    Add(AclAddArgs),
    /// List the rules and the mode.
    #[command(after_help = "Example:\n  keysafe volume acl list /srv/db --json")]
    List(AclTargetArgs),
    /// Remove a rule by its number.
    #[command(after_help = "Example:\n  keysafe volume acl rm /srv/db 2")]
    Rm(AclRmArgs),
    /// Set the mode: enforcing (deny), permissive (allow, log would-be denials) or admin
    /// (allow, log every use of a covered path).
    #[command(after_help = "Example:\n  keysafe volume acl mode /srv/db permissive")]
    Mode(AclModeArgs),
}

#[derive(Debug, Args)]
pub struct AclTargetArgs {
    /// The volume: its mount point or name.
    pub target: String,
    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Args)]
pub struct AclAddArgs {
    /// The volume: its mount point or name.
    pub target: String,
    /// The path inside the volume the rule opens: absolute within the volume (`/` is all of
    /// it), or a path under the mount point.
    #[arg(long)]
    pub allow: String,
    /// The executable allowed (as /proc/PID/exe shows it).
    #[arg(long)]
    pub exe: PathBuf,
    /// Pin the executable's SHA-256: `auto` hashes it now, or give the hex digest.
    #[arg(long)]
    pub sha256: Option<String>,
    /// For an interpreter: the script it must run (its first argument).
    #[arg(long)]
    pub script: Option<PathBuf>,
    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Args)]
pub struct AclRmArgs {
    pub target: String,
    /// The rule's number (from `acl list`).
    pub id: u32,
    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Args)]
pub struct AclModeArgs {
    pub target: String,
    /// enforcing, permissive or admin.
    pub mode: String,
    #[command(flatten)]
    pub table: TableArgs,
}

pub async fn run(cmd: VolumeCommand) -> anyhow::Result<()> {
    match cmd {
        VolumeCommand::Prepare(a) => prepare::prepare(a).await,
        VolumeCommand::Adopt(a) => prepare::adopt(a).await,
        VolumeCommand::Mount(a) => mount::mount(a).await,
        VolumeCommand::Umount(a) => mount::umount(a).await,
        VolumeCommand::Status(a) => status::run(a).await,
        VolumeCommand::Acl(c) => acl::run(c).await,
        VolumeCommand::Forget(a) => {
            let (home, _) = super::client_for(&a.table.client)?;
            let table = table_of(&home, &a.table);
            let name = keysafe_volume::table::VolumeName::parse(&a.name).map_err(verr)?;
            let e = table.remove(&name).map_err(verr)?;
            if a.table.client.json {
                return crate::output::json(&serde_json::json!({
                    "forgotten": e.name.to_string(),
                    "cipherdir": e.cipherdir,
                    "key_deposit": e.key_deposit.to_string(),
                }));
            }
            eprintln!(
                "Forgot volume {} ({}); its files and its key deposit {} are unchanged.",
                e.name,
                e.cipherdir.display(),
                e.key_deposit
            );
            Ok(())
        }
    }
}

/// The volume table of a home (or the one given).
pub(crate) fn table_of(home: &ClientHome, a: &TableArgs) -> VolumeTable {
    VolumeTable::at(a.table.clone().unwrap_or_else(|| home.dir.join(TABLE_FILE)))
}

pub(crate) fn home_and_client(a: &TableArgs) -> anyhow::Result<(ClientHome, KeysafeClient)> {
    super::client_for(&a.client)
}

/// A volume error as the CLI reports it (exit codes in `exit.rs`).
pub(crate) fn verr(e: VolumeError) -> anyhow::Error {
    match e {
        VolumeError::Client(c) => anyhow::Error::new(c),
        VolumeError::Invalid(m) => usage(m),
        VolumeError::Tampered(m) => anyhow::Error::new(SecurityError(m)),
        other => anyhow::Error::new(other),
    }
}

/// Warns on stderr when a key came from a stale cached copy.
pub(crate) fn warn_stale(what: &str, source: &keysafe_client::Source) {
    if let keysafe_client::Source::Stale { age, reason } = source {
        eprintln!(
            "keysafe: warning: no server answered; using the cached key of {what} fetched {} ago: {}",
            humantime::format_duration(std::time::Duration::from_secs(age.as_secs())),
            reason.replace('\n', " ")
        );
    }
}
