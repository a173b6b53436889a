//! A client's home directory: its private key (`client.key`, mode 0600), its self-signed
//! certificate (`client.crt`) and `client.toml` (servers, the pinned server fingerprint, its own
//! fingerprint). The directory is 0700. Every command refuses a key file that group or others
//! can read.

use crate::cache::{Cache, CacheConfig};
use crate::error::ClientError;
use crate::tls::ServerTrust;
use keysafe_proto::{ClientFingerprint, OrgName};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const KEY_FILE: &str = "client.key";
pub const CERT_FILE: &str = "client.crt";
pub const CONFIG_FILE: &str = "client.toml";

/// `client.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeConfig {
    /// Server URLs, tried in order.
    pub servers: Vec<String>,
    /// The pinned server fingerprint (SHA-256 of its public key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_fingerprint: Option<ClientFingerprint>,
    /// Instead of a pinned fingerprint: a CA certificate (PEM) that signs the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// The organisation this client registered into.
    pub org: OrgName,
    /// This client's own fingerprint.
    pub fingerprint: ClientFingerprint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Per-server pins for servers whose key differs from `server_fingerprint` (URL ->
    /// fingerprint). Servers restored from the same backup share a key and need no entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_fingerprints: BTreeMap<String, ClientFingerprint>,
    /// The local deposit cache (`[cache]`); defaults apply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
}

/// The client's certificate and private key, ready for TLS. The key is never printed.
pub struct ClientIdentity {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub fingerprint: ClientFingerprint,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("fingerprint", &self.fingerprint)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// A loaded client home.
#[derive(Debug, Clone)]
pub struct ClientHome {
    pub dir: PathBuf,
    pub config: HomeConfig,
}

fn home_err(what: &str, path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::Home(format!("{what} {}: {e}", path.display()))
}

/// Refuses a secret file that group or others can access.
pub fn check_key_permissions(path: &Path) -> Result<(), ClientError> {
    let meta = std::fs::metadata(path).map_err(|e| home_err("cannot read", path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ClientError::InsecureKeyFile {
                path: path.to_owned(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Syncs the directory that holds `path`: a file created or renamed there survives a crash
/// only once its directory entry is on disk too.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces `path` atomically with a private file (mode 0600 from the start) holding `parts`:
/// written to a uniquely named temporary file in the same directory, synced, renamed into
/// place, and the directory synced. The temporary file is removed if anything fails.
pub(crate) fn replace_private_file(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        crate::client::random_u64()
    ));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let result = o
        .open(&tmp)
        .and_then(|mut f| {
            for p in parts {
                f.write_all(p)?;
            }
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.and_then(|()| sync_parent(path))
}

pub(crate) fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), ClientError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true);
    if overwrite {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o
        .open(path)
        .map_err(|e| home_err("cannot create", path, e))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .and_then(|()| sync_parent(path))
        .map_err(|e| home_err("cannot write", path, e))
}

/// Creates `dir` (and parents) and makes it 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), ClientError> {
    std::fs::create_dir_all(dir).map_err(|e| home_err("cannot create", dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| home_err("cannot set the mode of", dir, e))?;
    }
    sync_parent(dir).map_err(|e| home_err("cannot sync the directory holding", dir, e))
}

impl ClientHome {
    /// The default home: the user's configuration directory (for example `~/.config/keysafe`).
    pub fn default_dir() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "keysafe").map(|d| d.config_dir().to_owned())
    }

    /// `--home` if given (the CLI maps `KEYSAFE_HOME` onto it), else the default.
    pub fn resolve_dir(explicit: Option<&Path>) -> Result<PathBuf, ClientError> {
        explicit
            .map(Path::to_owned)
            .or_else(Self::default_dir)
            .ok_or_else(|| {
                ClientError::Home("no home directory: pass --home or set KEYSAFE_HOME".into())
            })
    }

    /// Loads the identity in `dir` if it has one, or generates a new key pair and self-signed
    /// certificate there. An existing key is reused, so a registration that failed (wrong
    /// secret, server down) can simply be retried.
    pub fn ensure_identity(dir: &Path, common_name: &str) -> Result<ClientIdentity, ClientError> {
        let key_path = dir.join(KEY_FILE);
        if key_path.exists() {
            return Self::read_identity(dir);
        }
        create_private_dir(dir)?;
        let generated = keysafe_proto::identity::generate_self_signed(common_name, &[])
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        write_file(&key_path, generated.key_pem.as_bytes(), 0o600, false)?;
        write_file(
            &dir.join(CERT_FILE),
            generated.cert_pem.as_bytes(),
            0o644,
            true,
        )?;
        Self::read_identity(dir)
    }

    /// Reads `client.key` and `client.crt`, refusing a key file others can read.
    pub fn read_identity(dir: &Path) -> Result<ClientIdentity, ClientError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        check_key_permissions(&key_path)?;
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| home_err("cannot read the private key", &key_path, e))?;
        let cert = CertificateDer::from_pem_file(&cert_path)
            .map_err(|e| home_err("cannot read the certificate", &cert_path, e))?;
        let fingerprint = ClientFingerprint::of_certificate(&cert)
            .map_err(|e| home_err("bad certificate", &cert_path, e))?;
        Ok(ClientIdentity {
            cert,
            key,
            fingerprint,
        })
    }

    /// Loads a registered home: `client.toml` plus the identity files.
    pub fn load(dir: &Path) -> Result<Self, ClientError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ClientError::Home(format!(
                    "{} is not a registered keysafe client home (no {CONFIG_FILE}); run `keysafe register` first or pass --home",
                    dir.display()
                ))
            } else {
                home_err("cannot read", &path, e)
            }
        })?;
        let config: HomeConfig =
            toml::from_str(&text).map_err(|e| home_err("invalid", &path, e))?;
        if config.servers.is_empty() {
            return Err(ClientError::Home(format!(
                "{} lists no servers",
                path.display()
            )));
        }
        check_key_permissions(&dir.join(KEY_FILE))?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
        })
    }

    /// Writes `client.toml` (replacing any previous one).
    pub fn save(&self) -> Result<(), ClientError> {
        let text = toml::to_string_pretty(&self.config)
            .map_err(|e| ClientError::Invalid(format!("cannot encode client.toml: {e}")))?;
        let header = "# keysafe client home: which servers to use and whom to trust.\n\
                      # The private key is client.key (mode 0600); never copy it to another host.\n";
        let path = self.dir.join(CONFIG_FILE);
        replace_private_file(&path, &[header.as_bytes(), text.as_bytes()])
            .map_err(|e| home_err("cannot replace", &path, e))
    }

    pub fn identity(&self) -> Result<ClientIdentity, ClientError> {
        Self::read_identity(&self.dir)
    }

    /// How to trust one of the servers: its own pin, else the shared pin, else the CA.
    pub fn trust_for(&self, url: &str) -> Result<ServerTrust, ClientError> {
        let url = url.trim_end_matches('/');
        if let Some(fp) = self
            .config
            .server_fingerprints
            .iter()
            .find(|(u, _)| u.trim_end_matches('/') == url)
            .map(|(_, fp)| fp)
        {
            return Ok(ServerTrust::Fingerprint(fp.clone()));
        }
        self.trust()
    }

    /// The cache configuration (defaults when `[cache]` is absent).
    pub fn cache_config(&self) -> CacheConfig {
        self.config.cache.unwrap_or_default()
    }

    /// This home's deposit cache for its server set, unless disabled in `client.toml`.
    pub fn cache(&self) -> Option<Cache> {
        let config = self.cache_config();
        config
            .enabled
            .then(|| Cache::new(&self.dir, &self.config.servers, config))
    }

    /// How to trust the servers in general, from `client.toml`.
    pub fn trust(&self) -> Result<ServerTrust, ClientError> {
        if let Some(fp) = &self.config.server_fingerprint {
            return Ok(ServerTrust::Fingerprint(fp.clone()));
        }
        if let Some(ca) = &self.config.ca_cert {
            let path = if ca.is_absolute() {
                ca.clone()
            } else {
                self.dir.join(ca)
            };
            return Ok(ServerTrust::Ca(load_ca(&path)?));
        }
        Err(ClientError::Home(format!(
            "{} has neither server_fingerprint nor ca_cert",
            self.dir.join(CONFIG_FILE).display()
        )))
    }
}

/// Reads every certificate of a PEM file.
pub fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| home_err("cannot read CA certificate", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| home_err("bad CA certificate", path, e))?;
    if certs.is_empty() {
        return Err(ClientError::Home(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}
