//! `keysafe admin`: administration over the same mutual-TLS API as any client, as an
//! administrator identity: the one `init` made (through `--data-dir`) or an admin client home
//! (`--home`). There is no back door into the database.

mod audit;
mod client;
mod cluster;
mod group;
mod integrity;
mod lifecycle;
mod migrate;
mod org;
mod recover;
// Seals, keyring rotation and backups.
mod sealing;
mod tls;

pub use migrate::STAGED_CONFIG as STAGED_SEAL_CONFIG;

use crate::cli::{AdminArgs, AdminCommand};
use crate::cmd::init::ADMIN_HOME;
use crate::exit::usage;
use anyhow::Context;
use keysafe_client::{ClientHome, KeysafeClient};
use keysafe_proto::ClientFingerprint;
use keysafe_server::config::Config;

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    if let AdminCommand::Seal(c) = args.command {
        // Offline: no server, no client.
        let dir = args.data_dir.ok_or_else(|| {
            usage("seal migrate works on a stopped server's data directory: pass --data-dir")
        })?;
        return migrate::migrate(&dir, c, args.json).await;
    }
    if let AdminCommand::RecoverAdmin(a) = args.command {
        // Offline: the data directory is the proof; no administrator identity is needed.
        let dir = args.data_dir.ok_or_else(|| {
            usage("recover-admin works on the server's data directory: pass --data-dir")
        })?;
        return recover::run(&dir, a, args.json).await;
    }
    if let AdminCommand::Tls(c) = args.command {
        // Offline: files in the data directory; a running server reloads them by itself.
        let dir = args.data_dir.ok_or_else(|| {
            usage("tls renew works on the server's data directory: pass --data-dir")
        })?;
        return tls::run(&dir, c, args.json);
    }
    if let (AdminCommand::Backup(c), None, Some(dir)) = (&args.command, &args.home, &args.data_dir)
    {
        // On the server's host, from its data directory: no API, no administrator identity.
        let crate::cli::AdminBackupCommand::Create {
            recipients,
            include_root_key,
            include_admin_identity,
            include_tls_key: _,
            output,
            secrets,
        } = c;
        let includes = keysafe_server::backup::Includes {
            root_key: *include_root_key,
            tls_key: true,
            admin_identity: *include_admin_identity,
        };
        return crate::cmd::backup::create_offline(
            dir, recipients, includes, output, secrets, args.json,
        )
        .await;
    }
    if let (AdminCommand::Integrity(c), None, Some(dir)) =
        (&args.command, &args.home, &args.data_dir)
    {
        // On the server's host, from its data directory, with the seal.
        return integrity::offline(dir, c, args.json).await;
    }
    let client = admin_client(&args)?;
    match args.command {
        AdminCommand::Org(c) => org::run(&client, c, args.json).await,
        AdminCommand::Client(c) => client::run(&client, c, args.json).await,
        AdminCommand::Group(c) => group::run(&client, c, args.json).await,
        AdminCommand::Audit(c) => audit::run(&client, c, args.json).await,
        AdminCommand::Unseal { passphrase_file } => {
            sealing::unseal(&client, passphrase_file, args.json).await
        }
        AdminCommand::Keyring(c) => sealing::keyring(&client, c, args.json).await,
        AdminCommand::Backup(c) => sealing::backup(&client, c, args.json).await,
        AdminCommand::Cluster(c) => cluster::run(&client, c, args.json).await,
        AdminCommand::Integrity(_) => integrity::online(&client, args.json).await,
        AdminCommand::Seal(_) | AdminCommand::Tls(_) | AdminCommand::RecoverAdmin(_) => Ok(()),
    }
}

fn admin_client(args: &AdminArgs) -> anyhow::Result<KeysafeClient> {
    if let Some(h) = &args.home {
        let home = ClientHome::load(h)?;
        return Ok(KeysafeClient::from_home(&home)?);
    }
    if let Some(dir) = &args.data_dir {
        let config = Config::load(dir)?;
        let mut home = ClientHome::load(&dir.join(ADMIN_HOME))?;
        // Reach the server where its configuration says it listens now, and trust the
        // certificate it is configured with now (it may have been replaced since init).
        home.config.servers = vec![config.local_url()];
        let certs = keysafe_client::home::load_ca(&config.tls_cert)?;
        let der = certs
            .first()
            .with_context(|| format!("no certificate in {}", config.tls_cert.display()))?;
        home.config.server_fingerprint = Some(ClientFingerprint::of_certificate(der)?);
        home.config.ca_cert = None;
        return Ok(KeysafeClient::from_home(&home)?);
    }
    Err(usage(
        "admin commands need an administrator identity: pass --data-dir DIR (the server's data directory) or --home DIR (an admin client home)",
    ))
}
