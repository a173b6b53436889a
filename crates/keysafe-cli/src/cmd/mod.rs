//! One module per subcommand, and the dispatcher.

pub mod admin;
pub mod bench;
pub mod cache;
pub mod docs;
pub mod get;
pub mod group;
pub mod init;
pub mod kms;
pub mod ls;
pub mod purge;
pub mod put;
pub mod register;
pub mod rm;
pub mod serve;
pub mod share;
pub mod status;
pub mod undelete;
pub mod versions;
pub mod whoami;
// Seals and backups.
pub mod backup;
pub mod restore;
pub mod secrets;
// Encrypted volumes and LUKS disks.
pub mod luks;
pub mod volume;

use crate::cli::{Cli, ClientArgs, Command};
use crate::exit::usage;
use anyhow::Context;
use keysafe_client::{ClientHome, KeysafeClient};
use keysafe_proto::DepositName;

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(a) => init::run(a).await,
        Command::Serve(a) => serve::run(a).await,
        Command::Admin(a) => admin::run(a).await,
        Command::Register(a) => register::run(a).await,
        Command::Put(a) => put::run(a).await,
        Command::Get(a) => get::run(a).await,
        Command::Ls(a) => ls::run(a).await,
        Command::Versions(a) => versions::run(a).await,
        Command::Rm(a) => rm::run(a).await,
        Command::Undelete(a) => undelete::run(a).await,
        Command::Purge(a) => purge::run(a).await,
        Command::Whoami(a) => whoami::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Cache(c) => cache::run(c).await,
        Command::Bench(a) => bench::run(a).await,
        Command::Share(a) => share::share(a).await,
        Command::Unshare(a) => share::unshare(a).await,
        Command::Acl(a) => share::acl(a).await,
        Command::Shared(a) => share::shared(a).await,
        Command::Group(c) => group::run(c).await,
        Command::Backup(c) => backup::run(c).await,
        Command::Restore(a) => restore::run(a).await,
        Command::Kms(a) => kms::run(a).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(&dir),
        Command::Volume(c) => volume::run(c).await,
        Command::Luks(c) => luks::run(c).await,
    }
}

/// Loads the client home named by `--home` / `KEYSAFE_HOME` / the default, and a client for it.
pub(crate) fn client_for(args: &ClientArgs) -> anyhow::Result<(ClientHome, KeysafeClient)> {
    let dir = ClientHome::resolve_dir(args.home.as_deref())?;
    let home = ClientHome::load(&dir)?;
    let client = KeysafeClient::from_home(&home)?;
    Ok((home, client))
}

/// The end-to-end encryption layer for a loaded home.
pub(crate) fn vault_for(
    home: &ClientHome,
    client: KeysafeClient,
) -> anyhow::Result<keysafe_client::vault::Vault> {
    Ok(keysafe_client::vault::Vault::from_home(home, client)?)
}

pub(crate) fn fingerprint_arg(s: &str) -> anyhow::Result<keysafe_proto::ClientFingerprint> {
    keysafe_proto::ClientFingerprint::parse(s).map_err(|e| usage(e.to_string()))
}

pub(crate) fn group_arg(s: &str) -> anyhow::Result<keysafe_proto::GroupName> {
    keysafe_proto::GroupName::parse(s).map_err(|e| usage(e.message().to_owned()))
}

pub(crate) fn deposit_name(s: &str) -> anyhow::Result<DepositName> {
    DepositName::parse(s).map_err(|e| usage(e.message().to_owned()))
}

pub(crate) fn version_arg(v: Option<u64>) -> anyhow::Result<Option<keysafe_proto::DepositVersion>> {
    v.map(|v| keysafe_proto::DepositVersion::new(v).map_err(|e| usage(e.message().to_owned())))
        .transpose()
}

/// Reads a secret from a file, trimming one trailing newline.
pub(crate) fn read_secret_file(
    path: &std::path::Path,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let s = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    Ok(zeroize::Zeroizing::new(
        s.strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&s)
            .to_owned(),
    ))
}
