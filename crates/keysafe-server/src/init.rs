//! Initialising a data directory: the configuration file, the server's self-signed certificate,
//! the root key, and the database with its first keyring version. Refuses to touch a directory
//! that already holds anything. The first administrator identity is added by the caller (the
//! CLI), which owns the client-home format.
//!
//! The certificate and key are also stored in the database as the cluster's TLS identity, the
//! key wrapped by the keyring (docs/adr/0010-cluster-tls-identity.md). A node that *joins* an
//! existing cluster (`join`) creates nothing in the database: it opens the keyring with the
//! seal it was given (proving it holds the seal), takes the cluster's TLS identity from the
//! database, and so serves the key every client already pinned.

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
    /// Join the cluster whose database `storage` names instead of creating one.
    pub join: bool,
}

impl std::fmt::Debug for InitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOptions")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("hostname", &self.hostname)
            .field("seal", &self.seal)
            .field("storage", &self.storage)
            .field("join", &self.join)
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
    /// This node's id in the cluster (`node-id` in the data directory).
    pub node_id: keysafe_proto::cluster::NodeId,
    /// Whether it joined an existing cluster.
    pub joined: bool,
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
    if opts.join {
        return join_inner(opts, &dir, &config, &config_text).await;
    }
    if opts.seal.root_key_file.is_some() {
        bail!(
            "--root-key-file names the root key of an existing cluster: use it with --join (a new \
             cluster makes its own root key)"
        );
    }
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
    // The identity every node of this database serves (nodes that join take it).
    service
        .store_cluster_identity(&cert.cert_pem, cert.key_pem.as_bytes())
        .await
        .context("cannot store the cluster's TLS identity")?;
    let node_id = crate::cluster::create_node_id(&dir)?;
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
            node_id,
            joined: false,
        },
        service,
    ))
}

/// `init --join`: a new node of an existing cluster. Nothing is written to the database here
/// (the caller adds this node's administrator identity); the data directory gets the
/// configuration, the cluster's TLS identity and a node id.
async fn join_inner(
    opts: &InitOptions,
    dir: &Path,
    config: &Config,
    config_text: &str,
) -> anyhow::Result<(InitReport, Service)> {
    let root_key = match &config.seal {
        SealConfig::File { root_key_file } => {
            if opts.seal.root_key_file.is_none() {
                bail!(
                    "joining a cluster sealed by a root key file needs a copy of that file: \
                     --root-key-file FILE (mode 0600)"
                );
            }
            root_key_file.clone()
        }
        _ => dir.join("root.key"),
    };
    let store = match keysafe_store::open(&config.storage).await {
        Ok(s) => s,
        Err(keysafe_core::StoreError::NotFound) => bail!(
            "there is no keysafe cluster in {}: initialise the first node without --join",
            config.storage
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e))
                .with_context(|| format!("cannot open the storage {}", config.storage));
        }
    };
    let inputs = crate::seal::SealInputs {
        passphrase: opts.passphrase.clone(),
    };
    let seal = match crate::seal::open_seal(config, &inputs, &store.load_keks().await?).await? {
        Ok(Some(seal)) => seal,
        Ok(None) => bail!(
            "joining a cluster sealed by a passphrase needs the passphrase: --passphrase-file, \
             KEYSAFE_PASSPHRASE or a terminal to type it on"
        ),
        Err(e) => bail!("the seal cannot open this cluster's keyring: {e}"),
    };
    let service = Service::open(store, Some(seal), Arc::new(SystemClock), config.limits())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the seal given does not open this cluster's keyring (the wrong root key, \
                 passphrase or HSM key?): {e}"
            )
        })?;
    if let Some(reason) = service.sealed_reason() {
        bail!("the seal does not open this cluster's keyring: {reason}");
    }
    let identity = service
        .cluster_identity()
        .await
        .context("cannot open the cluster's TLS identity")?
        .context(
            "this cluster has no shared TLS identity (its first node was initialised by an \
             older keysafe); join by copying its TLS certificate and key instead",
        )?;
    write_new(&dir.join(CONFIG_FILE), config_text.as_bytes(), false)?;
    if let Some(parent) = config.tls_cert.parent() {
        create_private_dir(parent)?;
    }
    write_new(&config.tls_cert, identity.cert_pem.as_bytes(), false)?;
    write_new(&config.tls_key, &identity.key_pem, true)?;
    let node_id = crate::cluster::create_node_id(dir)?;
    Ok((
        InitReport {
            data_dir: dir.to_owned(),
            config: dir.join(CONFIG_FILE),
            tls_cert: config.tls_cert.clone(),
            tls_key: config.tls_key.clone(),
            root_key,
            seal: config.seal.kind().to_owned(),
            database: config.storage.to_string(),
            fingerprint: identity.fingerprint,
            url: config.local_url(),
            node_id,
            joined: true,
        },
        service,
    ))
}
