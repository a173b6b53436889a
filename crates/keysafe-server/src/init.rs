//! Initialising a data directory: the configuration file, the server's self-signed certificate,
//! the root key, and the database with its first keyring version. Refuses to touch a directory
//! that already holds anything. The first administrator identity is added by the caller (the
//! CLI), which owns the client-home format.

use crate::config::{
    CONFIG_FILE, Config, SealConfig, SealTemplate, StorageTemplate, config_template_with_seal,
};
use anyhow::{Context, bail};
use keysafe_core::{Service, SystemClock};
use keysafe_proto::ClientFingerprint;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone)]
pub struct InitOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub hostname: String,
    /// The seal to create; the default is the root key file.
    pub seal: SealTemplate,
    /// Where the state goes (`--storage`); the default is a database file in the data directory.
    pub storage: StorageTemplate,
    /// The passphrase, for the passphrase seal.
    pub passphrase: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for InitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOptions")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("hostname", &self.hostname)
            .field("seal", &self.seal)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

/// What `init` created, for the report printed to the operator.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub root_key: PathBuf,
    /// `file`, `passphrase` or `pkcs11`.
    pub seal: String,
    /// Where the state lives (the database file, or the connection string).
    pub database: String,
    pub fingerprint: ClientFingerprint,
    pub url: String,
}

/// True when `dir` is missing or an empty directory, i.e. `serve` may initialise it.
pub fn is_uninitialised(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(mut entries) => entries.next().is_none(),
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    keysafe_core::fs::create_private_dir(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Creates a file, synced, with its directory synced (keys 0600; the configuration and the
/// certificate 0644).
fn write_new(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    keysafe_core::fs::write_new(path, contents, if private { 0o600 } else { 0o644 })
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates everything the server needs in an empty (or missing) data directory, and returns the
/// opened service so the caller can add the first administrator.
pub async fn init_server(opts: &InitOptions) -> anyhow::Result<(InitReport, Service)> {
    let dir = &opts.data_dir;
    if !is_uninitialised(dir) {
        if dir.join(CONFIG_FILE).exists() {
            bail!(
                "{} is already initialised (it has {CONFIG_FILE}); refusing to overwrite it",
                dir.display()
            );
        }
        bail!("{} is not empty; refusing to initialise it", dir.display());
    }
    let existed = dir.exists();
    create_private_dir(dir)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    match init_inner(opts, &dir).await {
        Ok(r) => Ok(r),
        Err(e) => {
            // Leave nothing behind: a failed init (wrong PIN, unreachable HSM, short passphrase)
            // changes nothing on disk.
            if existed {
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for e in entries.flatten() {
                        let p = e.path();
                        let _ = if p.is_dir() {
                            std::fs::remove_dir_all(&p)
                        } else {
                            std::fs::remove_file(&p)
                        };
                    }
                }
            } else {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(e)
        }
    }
}

async fn init_inner(opts: &InitOptions, dir: &Path) -> anyhow::Result<(InitReport, Service)> {
    let dir = dir.to_owned();

    let config_text =
        config_template_with_seal(opts.listen, &opts.hostname, &opts.seal, &opts.storage);
    let config = Config::parse(&dir, &config_text)?;
    // The seal first: a wrong PIN or a missing module stops here, before anything is written.
    let seal = crate::seal::create_seal(&config, opts.passphrase.clone()).await?;
    write_new(&dir.join(CONFIG_FILE), config_text.as_bytes(), false)?;

    // Server certificate: SAN = host name, and the listen IP (or loopback when listening on all).
    let mut sans = vec![opts.hostname.clone()];
    let ip = if opts.listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        opts.listen.ip().to_string()
    };
    if !sans.contains(&ip) {
        sans.push(ip);
    }
    let cert = keysafe_proto::identity::generate_self_signed_for(
        &opts.hostname,
        &sans,
        keysafe_proto::identity::SERVER_CERT_VALIDITY,
    )?;
    if let Some(parent) = config.tls_cert.parent() {
        create_private_dir(parent)?;
    }
    write_new(&config.tls_cert, cert.cert_pem.as_bytes(), false)?;
    write_new(&config.tls_key, cert.key_pem.as_bytes(), true)?;

    let root_key_file = match &config.seal {
        SealConfig::File { root_key_file } => root_key_file.clone(),
        _ => dir.join("root.key"),
    };

    let store = keysafe_store::create(&config.storage)
        .await
        .with_context(|| format!("cannot create the storage {}", config.storage))?;
    Service::initialise_keyring(store.as_ref(), seal.clone(), &SystemClock).await?;
    let service = Service::open(store, Some(seal), Arc::new(SystemClock), config.limits()).await?;
    Ok((
        InitReport {
            data_dir: dir.clone(),
            config: dir.join(CONFIG_FILE),
            tls_cert: config.tls_cert.clone(),
            tls_key: config.tls_key.clone(),
            root_key: root_key_file,
            seal: config.seal.kind().to_owned(),
            database: config.storage.to_string(),
            fingerprint: cert.fingerprint,
            url: config.local_url(),
        },
        service,
    ))
}
