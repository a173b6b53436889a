//! `keysafe init`: create a data directory, including the first administrator identity in
//! `DIR/admin` (a client home whose key never leaves the data directory).

use crate::cli::InitArgs;
use crate::output;
use keysafe_client::ClientHome;
use keysafe_client::home::HomeConfig;
use keysafe_proto::{ClientFingerprint, ClientName, OrgName};
use keysafe_server::init::{InitOptions, InitReport, init_server};
use serde::Serialize;
use std::path::PathBuf;

pub const ADMIN_HOME: &str = "admin";

#[derive(Debug, Clone, Serialize)]
pub struct InitSummary {
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub root_key: PathBuf,
    /// `file`, `passphrase` or `pkcs11`.
    pub seal: String,
    /// Where the state lives (the database file, or the connection string).
    pub database: String,
    pub admin_home: PathBuf,
    pub admin_fingerprint: ClientFingerprint,
    pub server_fingerprint: ClientFingerprint,
    pub url: String,
    /// This node's id in the cluster.
    pub node_id: keysafe_proto::cluster::NodeId,
    /// Whether it joined an existing cluster (`--join`).
    pub joined: bool,
}

/// Creates the data directory and its administrator. The test kit uses this too.
pub async fn init_data_dir(opts: &InitOptions) -> anyhow::Result<InitSummary> {
    let (report, service): (InitReport, _) = init_server(opts).await?;
    let admin_home = report.data_dir.join(ADMIN_HOME);
    let identity = ClientHome::ensure_identity(&admin_home, "keysafe-admin")?;
    let age = keysafe_client::e2e::Identity::generate();
    age.write_new_file(&admin_home.join(keysafe_client::e2e::AGE_KEY_FILE))?;
    // A node that joins a cluster gets an administrator of its own (whoever holds the seal and
    // the database can administer the cluster anyway), named after the node.
    let admin_name = if report.joined {
        format!("admin@{}", report.node_id)
    } else {
        "admin".to_owned()
    };
    let (info, token) = service
        .bootstrap_admin(
            &identity.fingerprint,
            &identity.cert,
            ClientName::parse(&admin_name)?,
            Some(age.recipient()),
        )
        .await?;
    keysafe_client::token::TokenKeeper::in_home(&admin_home).offer(&token.0)?;
    let home = ClientHome {
        dir: admin_home.clone(),
        config: HomeConfig {
            servers: vec![report.url.clone()],
            server_fingerprint: Some(report.fingerprint.clone()),
            ca_cert: None,
            org: OrgName::parse(keysafe_core::service::ADMIN_ORG)?,
            fingerprint: info.fingerprint.clone(),
            name: Some(admin_name),
            server_fingerprints: Default::default(),
            cache: None,
        },
    };
    home.save()?;
    Ok(InitSummary {
        data_dir: report.data_dir,
        config: report.config,
        tls_cert: report.tls_cert,
        tls_key: report.tls_key,
        root_key: report.root_key,
        seal: report.seal,
        database: report.database,
        admin_home,
        admin_fingerprint: info.fingerprint,
        server_fingerprint: report.fingerprint,
        url: report.url,
        node_id: report.node_id,
        joined: report.joined,
    })
}

pub fn print_summary(s: &InitSummary) {
    if s.joined {
        println!(
            "Initialised keysafe data directory {} (mode 0700) as node {} of the cluster in {}:",
            s.data_dir.display(),
            s.node_id,
            s.database
        );
    } else {
        println!(
            "Initialised keysafe data directory {} (mode 0700):",
            s.data_dir.display()
        );
    }
    println!("  configuration   {}", s.config.display());
    println!("  TLS certificate {}", s.tls_cert.display());
    println!("  TLS key         {} (mode 0600)", s.tls_key.display());
    match s.seal.as_str() {
        "file" => println!("  root key        {} (mode 0600)", s.root_key.display()),
        other => println!("  seal            {other}"),
    }
    println!("  database        {}", s.database);
    println!(
        "  admin identity  {} (fingerprint {})",
        s.admin_home.display(),
        s.admin_fingerprint
    );
    println!("Server URL:         {}", s.url);
    println!("Server fingerprint: {}", s.server_fingerprint);
    println!(
        "Give the fingerprint to client hosts (register --server-fingerprint), or check what they pinned against it; on this host it is also: {}",
        crate::cmd::register::pin_check_command(&s.tls_cert.display().to_string())
    );
    match s.seal.as_str() {
        "file" => println!(
            "Keep a copy of {} somewhere safe and separate: without it nothing in the database can be decrypted.",
            s.root_key.display()
        ),
        "passphrase" => println!(
            "Remember the passphrase: without it nothing in the database can be decrypted. Start with --passphrase-file, KEYSAFE_PASSPHRASE, a terminal prompt, or unseal later with `keysafe admin unseal`."
        ),
        _ => println!(
            "The keyring is sealed by a non-extractable key in the HSM: destroying that key makes every deposit unreadable."
        ),
    }
}

pub async fn run(args: InitArgs) -> anyhow::Result<()> {
    let passphrase = if args.join {
        crate::cmd::secrets::join_passphrase(&args.seal)?
    } else {
        crate::cmd::secrets::init_passphrase(&args.seal)?
    };
    let summary = init_data_dir(&InitOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        hostname: args.hostname,
        passphrase,
        seal: crate::cmd::secrets::template(&args.seal),
        storage: args.storage.template()?,
        join: args.join,
    })
    .await?;
    if args.json {
        output::json(&summary)
    } else {
        print_summary(&summary);
        Ok(())
    }
}
