//! Backups: a consistent online snapshot of the store (`keysafe_store::snapshot`), the
//! configuration, the server's TLS identity, the administrator identity and (only when asked)
//! the root key, in one container encrypted to age X25519 recipients. age's authenticated
//! encryption makes any modified byte fail decryption; each file also carries its SHA-256 in the
//! header, checked again on restore.
//!
//! Container (the age plaintext): `KEYSAFE-BACKUP 1\n`, a 4-byte big-endian header length, the
//! JSON [`Manifest`], then each file's bytes in manifest order.

use crate::config::{CONFIG_FILE, Config, SealConfig};
use age::Recipient;
use keysafe_proto::ClientFingerprint;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::Zeroizing;

const MAGIC: &[u8] = b"KEYSAFE-BACKUP 1\n";
/// The name of the database inside a backup.
pub const DB_ENTRY: &str = "keysafe.db";
pub const ROOT_KEY_ENTRY: &str = "root.key";

/// What a backup holds besides the database, resolved from the configuration at start.
#[derive(Debug, Clone)]
pub struct BackupSources {
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub root_key: Option<PathBuf>,
    pub seal: String,
    pub storage: keysafe_store::StorageConfig,
}

impl BackupSources {
    pub fn of(config: &Config) -> Self {
        Self {
            data_dir: config.data_dir.clone(),
            config: config.data_dir.join(CONFIG_FILE),
            tls_cert: config.tls_cert.clone(),
            tls_key: config.tls_key.clone(),
            root_key: match &config.seal {
                SealConfig::File { root_key_file } => Some(root_key_file.clone()),
                _ => None,
            },
            seal: config.seal.kind().to_owned(),
            storage: config.storage.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the data directory (`keysafe.db`, `keysafe.toml`, `tls/server.key`...).
    pub name: String,
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub created_at: keysafe_proto::Timestamp,
    pub keysafe_version: String,
    pub server_fingerprint: ClientFingerprint,
    /// `file`, `passphrase` or `pkcs11`.
    pub seal: String,
    pub includes_root_key: bool,
    pub files: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The request cannot be honoured (bad recipient, root key asked of a non-file seal).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// Parses age recipients (`age1...`).
pub fn parse_recipients(list: &[String]) -> Result<Vec<age::x25519::Recipient>, String> {
    if list.is_empty() {
        return Err("at least one age recipient is required".into());
    }
    list.iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim())
                .map_err(|e| format!("invalid age recipient {r:?}: {e}"))
        })
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
}

fn rel(data_dir: &Path, p: &Path) -> Result<String, BackupError> {
    p.strip_prefix(data_dir)
        .ok()
        .and_then(|r| r.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            BackupError::Refused(format!(
                "{} is outside the data directory; backups only carry files inside it",
                p.display()
            ))
        })
}

/// Makes a backup of a running server and returns the encrypted file.
pub async fn create(
    src: &BackupSources,
    fingerprint: &ClientFingerprint,
    recipients: Vec<age::x25519::Recipient>,
    include_root_key: bool,
) -> Result<Vec<u8>, BackupError> {
    let failed = |e: &dyn std::fmt::Display| BackupError::Failed(e.to_string());
    if include_root_key && src.root_key.is_none() {
        return Err(BackupError::Refused(format!(
            "--include-root-key applies to the file seal; this server uses the {} seal",
            src.seal
        )));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(&src.data_dir)
        .map_err(|e| failed(&e))?;
    let snap = tmp.path().join(DB_ENTRY);
    keysafe_store::snapshot::take(&src.storage, &snap)
        .await
        .map_err(|e| match e {
            keysafe_core::StoreError::Unsupported(m) => BackupError::Refused(m),
            other => failed(&other),
        })?;
    let src = src.clone();
    let fingerprint = fingerprint.clone();
    tokio::task::spawn_blocking(move || {
        let mut files: Vec<(String, Zeroizing<Vec<u8>>)> = Vec::new();
        files.push((
            DB_ENTRY.into(),
            Zeroizing::new(std::fs::read(&snap).map_err(|e| failed(&e))?),
        ));
        drop(tmp);
        let mut add = |p: &Path| -> Result<(), BackupError> {
            let bytes = std::fs::read(p)
                .map_err(|e| BackupError::Failed(format!("cannot read {}: {e}", p.display())))?;
            files.push((rel(&src.data_dir, p)?, Zeroizing::new(bytes)));
            Ok(())
        };
        add(&src.config)?;
        add(&src.tls_cert)?;
        add(&src.tls_key)?;
        // The administrator identity `init` made, so `keysafe admin --data-dir` works after a
        // restore.
        let admin = src.data_dir.join("admin");
        if let Ok(entries) = std::fs::read_dir(&admin) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths.iter().filter(|p| p.is_file()) {
                add(p)?;
            }
        }
        if include_root_key && let Some(rk) = &src.root_key {
            let bytes = std::fs::read(rk)
                .map_err(|e| BackupError::Failed(format!("cannot read {}: {e}", rk.display())))?;
            files.push((ROOT_KEY_ENTRY.into(), Zeroizing::new(bytes)));
        }
        let manifest = Manifest {
            format: 1,
            created_at: keysafe_proto::Timestamp::now(),
            keysafe_version: env!("CARGO_PKG_VERSION").into(),
            server_fingerprint: fingerprint,
            seal: src.seal.clone(),
            includes_root_key: include_root_key,
            files: files
                .iter()
                .map(|(n, b)| Entry {
                    name: n.clone(),
                    size: b.len() as u64,
                    sha256: sha256_hex(b),
                })
                .collect(),
        };
        encrypt(&manifest, &files, &recipients)
    })
    .await
    .map_err(|e| failed(&e))?
}

fn encrypt(
    manifest: &Manifest,
    files: &[(String, Zeroizing<Vec<u8>>)],
    recipients: &[age::x25519::Recipient],
) -> Result<Vec<u8>, BackupError> {
    let failed = |e: &dyn std::fmt::Display| BackupError::Failed(e.to_string());
    let header = serde_json::to_vec(manifest).map_err(|e| failed(&e))?;
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn Recipient))
        .map_err(|e| failed(&e))?;
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).map_err(|e| failed(&e))?;
    let len = u32::try_from(header.len()).map_err(|e| failed(&e))?;
    w.write_all(MAGIC)
        .and_then(|_| w.write_all(&len.to_be_bytes()))
        .and_then(|_| w.write_all(&header))
        .map_err(|e| failed(&e))?;
    for (_, b) in files {
        w.write_all(b).map_err(|e| failed(&e))?;
    }
    w.finish().map_err(|e| failed(&e))?;
    Ok(out)
}

/// A decrypted, verified backup.
pub struct Opened {
    pub manifest: Manifest,
    /// Each file with its bytes, in manifest order.
    pub files: Vec<(Entry, Zeroizing<Vec<u8>>)>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

/// Loads age identities from identity files (`AGE-SECRET-KEY-1...` lines).
pub fn load_identities(
    paths: &[PathBuf],
) -> anyhow::Result<Vec<Box<dyn age::Identity + Send + Sync>>> {
    use anyhow::Context;
    let mut out = Vec::new();
    for p in paths {
        let f = age::IdentityFile::from_file(p.display().to_string())
            .with_context(|| format!("cannot read the identity file {}", p.display()))?;
        out.extend(
            f.into_identities()
                .with_context(|| format!("bad identity file {}", p.display()))?,
        );
    }
    if out.is_empty() {
        anyhow::bail!("no age identity given (--identity FILE)");
    }
    Ok(out)
}

/// Decrypts and checks a backup: age authentication, container format, every file's size and
/// SHA-256. Any modification is an error; nothing partial is returned.
pub fn open(
    bytes: &[u8],
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> anyhow::Result<Opened> {
    use anyhow::{Context, bail};
    let dec = age::Decryptor::new(bytes).context(
        "this is not a keysafe backup, or it was modified (the age header does not parse)",
    )?;
    let mut r = dec
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .context("cannot decrypt the backup: none of the given identities is a recipient, or the header was modified")?;
    let mut plain = Zeroizing::new(Vec::new());
    r.read_to_end(&mut plain)
        .context("the backup was modified or truncated (authentication failed); refusing it")?;
    let rest = plain
        .strip_prefix(MAGIC)
        .context("not a keysafe backup (bad magic)")?;
    if rest.len() < 4 {
        bail!("the backup is truncated");
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if rest.len() < len {
        bail!("the backup is truncated");
    }
    let (header, mut body) = rest.split_at(len);
    let manifest: Manifest = serde_json::from_slice(header).context("bad backup manifest")?;
    if manifest.format != 1 {
        bail!("unsupported backup format {}", manifest.format);
    }
    let mut files = Vec::new();
    for e in &manifest.files {
        let size = usize::try_from(e.size).context("bad size")?;
        if body.len() < size {
            bail!("the backup is truncated at {}", e.name);
        }
        let (b, next) = body.split_at(size);
        if sha256_hex(b) != e.sha256 {
            bail!(
                "{} does not match its checksum; refusing the backup",
                e.name
            );
        }
        if e.name.split('/').any(|c| c == ".." || c.is_empty()) || e.name.starts_with('/') {
            bail!("bad file name {:?} in the backup", e.name);
        }
        files.push((e.clone(), Zeroizing::new(b.to_vec())));
        body = next;
    }
    if !body.is_empty() {
        bail!("the backup has trailing data; refusing it");
    }
    if !files.iter().any(|(e, _)| e.name == DB_ENTRY) {
        bail!("the backup has no database");
    }
    Ok(Opened { manifest, files })
}
