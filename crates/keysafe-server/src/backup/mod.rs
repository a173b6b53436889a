//! Backups: the store's logical export (every record, sealed and wrapped as stored) and a few
//! files of the data directory, in one signed container (`container`) encrypted to age X25519
//! recipients, written and read as a stream (memory stays flat whatever the store's size).
//!
//! Two ways to make one, with different rights over the key-bearing files (the root key of a
//! file seal, the server's TLS private key, the administrator identity `init` made):
//!
//! - on the data directory (`keysafe admin --data-dir DIR backup create`, on the server's host,
//!   by whoever can read its files): the TLS key always, the root key and the administrator
//!   identity only when asked;
//! - over the API (`POST /v1/admin/backup`, any administrator): none of them, unless the request
//!   asks for them and every recipient is pinned in `keysafe.toml` (`[backup] key_recipients`),
//!   so an administrator, even one promoted over the API, cannot take the keys to a recipient of
//!   their choosing.
//!
//! Either way the backup is signed by the server's audit key; restore and verify check it.

pub mod container;

pub use container::{
    ContainerError, ContainerReader, Entry, Includes, Manifest, Opened, Origin, Trailer, Verified,
};

use crate::config::{CONFIG_FILE, Config, SealConfig};
use age::Recipient;
use bytes::Bytes;
use container::{BackupSigner, ContainerWriter, sha256_hex};
use futures_util::StreamExt;
use keysafe_core::store::{RecordStream, StoreError};
use keysafe_proto::ClientFingerprint;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::Zeroizing;

/// The name of a file seal's root key inside a backup (wherever the configuration keeps it).
pub const ROOT_KEY_ENTRY: &str = "root.key";
/// The directory of the administrator identity `init` makes, inside the data directory.
pub const ADMIN_DIR: &str = "admin";

/// What a backup may carry besides the store, resolved from the configuration at start.
#[derive(Debug, Clone)]
pub struct BackupSources {
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub root_key: Option<PathBuf>,
    pub seal: String,
    /// The only recipients an online backup may carry key-bearing files to.
    pub key_recipients: Vec<String>,
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
            key_recipients: config.backup.key_recipients.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The request cannot be honoured (bad recipient, root key asked of a non-file seal).
    #[error("{0}")]
    Refused(String),
    /// The caller may not have this backup (key-bearing files to recipients not pinned).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Failed(String),
}

fn failed(e: &dyn std::fmt::Display) -> BackupError {
    BackupError::Failed(e.to_string())
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

/// Whether an online backup may carry what it asks for: key-bearing files only when every
/// recipient is one of the pinned ones.
pub fn check_online(
    includes: &Includes,
    recipients: &[age::x25519::Recipient],
    pinned: &[String],
) -> Result<(), BackupError> {
    if !includes.any() {
        return Ok(());
    }
    let pinned: Vec<String> = parse_recipients(pinned)
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    if pinned.is_empty() || recipients.iter().any(|r| !pinned.contains(&r.to_string())) {
        return Err(BackupError::Forbidden(
            "a backup over the API carries no root key, TLS key or administrator identity unless \
             every recipient is pinned in keysafe.toml ([backup] key_recipients); make a \
             key-bearing backup on the server's host with `keysafe admin --data-dir DIR backup \
             create`"
                .into(),
        ));
    }
    Ok(())
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

/// The manifest and the files of one backup, read before any record is written.
pub struct Plan {
    pub manifest: Manifest,
    files: Vec<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

/// Reads the files a backup carries: the configuration and the TLS certificate always, the
/// key-bearing ones as `includes` says.
pub fn plan(
    src: &BackupSources,
    fingerprint: &ClientFingerprint,
    includes: Includes,
    origin: Origin,
    audit_key_id: &str,
) -> Result<Plan, BackupError> {
    if includes.root_key && src.root_key.is_none() {
        return Err(BackupError::Refused(format!(
            "--include-root-key applies to the file seal; this server uses the {} seal",
            src.seal
        )));
    }
    let mut files: Vec<(String, Zeroizing<Vec<u8>>)> = Vec::new();
    let mut add = |name: String, p: &Path| -> Result<(), BackupError> {
        let bytes = std::fs::read(p)
            .map_err(|e| BackupError::Failed(format!("cannot read {}: {e}", p.display())))?;
        files.push((name, Zeroizing::new(bytes)));
        Ok(())
    };
    add(rel(&src.data_dir, &src.config)?, &src.config)?;
    add(rel(&src.data_dir, &src.tls_cert)?, &src.tls_cert)?;
    if includes.tls_key {
        add(rel(&src.data_dir, &src.tls_key)?, &src.tls_key)?;
    }
    if includes.admin_identity {
        let admin = src.data_dir.join(ADMIN_DIR);
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&admin)
            .map_err(|e| {
                BackupError::Refused(format!(
                    "no administrator identity in {}: {e}",
                    admin.display()
                ))
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for p in &paths {
            add(rel(&src.data_dir, p)?, p)?;
        }
    }
    if includes.root_key
        && let Some(rk) = &src.root_key
    {
        add(ROOT_KEY_ENTRY.into(), rk)?;
    }
    let manifest = Manifest {
        format: container::FORMAT,
        records_format: container::RECORDS_FORMAT,
        created_at: keysafe_proto::Timestamp::now(),
        keysafe_version: env!("CARGO_PKG_VERSION").into(),
        origin,
        server_fingerprint: fingerprint.clone(),
        seal: src.seal.clone(),
        includes,
        audit_key_id: audit_key_id.to_owned(),
        files: files
            .iter()
            .map(|(n, b)| Entry {
                name: n.clone(),
                size: b.len() as u64,
                sha256: sha256_hex(b),
            })
            .collect(),
    };
    Ok(Plan {
        manifest,
        files: files.into_iter().map(|(_, b)| b).collect(),
    })
}

/// Writes a whole backup into `out`: the age encryption of the container, records pulled from
/// `records` as they are written. Blocks: run it on a blocking thread (it waits for records on
/// `rt`). An error from the records (the export failed) fails the backup.
pub fn write<W: Write>(
    out: W,
    plan: &Plan,
    mut records: RecordStream,
    signer: &dyn BackupSigner,
    recipients: &[age::x25519::Recipient],
    rt: &tokio::runtime::Handle,
) -> Result<(W, Trailer), BackupError> {
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn Recipient))
        .map_err(|e| failed(&e))?;
    let w = enc
        .wrap_output(std::io::BufWriter::with_capacity(64 * 1024, out))
        .map_err(|e| failed(&e))?;
    let files: Vec<&[u8]> = plan.files.iter().map(|b| &b[..]).collect();
    let mut c = ContainerWriter::start(w, &plan.manifest, &files).map_err(|e| failed(&e))?;
    while let Some(r) = rt.block_on(records.next()) {
        let r = r.map_err(|e| BackupError::Failed(format!("reading the store: {e}")))?;
        c.record(&r).map_err(|e| failed(&e))?;
    }
    let (w, trailer) = c.finish(signer).map_err(|e| failed(&e))?;
    let out = w
        .finish()
        .map_err(|e| failed(&e))?
        .into_inner()
        .map_err(|e| failed(&e.error()))?;
    Ok((out, trailer))
}

/// A `Write` that hands what it is given to an HTTP body in chunks, waiting while the body's
/// reader is behind (the channel is bounded).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An online backup as a stream of encrypted bytes (an HTTP body). A failure after the first
/// bytes ends the stream with an error, so the body is cut short and the client, which checks
/// the end of the age stream and the signature, never takes it for a whole backup.
pub fn stream(
    plan: Plan,
    source: keysafe_core::service::BackupSource,
    recipients: Vec<age::x25519::Recipient>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    // 64 KiB writes (the BufWriter's), at most 8 of them waiting: about 512 KiB in flight.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter { tx: tx.clone() };
        let started = std::time::Instant::now();
        match write(
            out,
            &plan,
            source.records,
            source.signer.as_ref(),
            &recipients,
            &rt,
        ) {
            Ok((_, trailer)) => tracing::info!(
                records = trailer.total,
                seconds = started.elapsed().as_secs_f64(),
                "backup streamed"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "backup failed while streaming");
                let _ = tx.blocking_send(Err(std::io::Error::other("the backup failed")));
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
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

/// Decrypts a backup as it is read. The age header is checked now; every chunk (and the end of
/// the stream) as it is read, so a modified or truncated file fails when the reader reaches
/// the damage.
pub fn decrypt<R: Read + Send + 'static>(
    input: R,
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> anyhow::Result<Box<dyn BufRead + Send>> {
    use anyhow::Context;
    let dec = age::Decryptor::new_buffered(std::io::BufReader::with_capacity(64 * 1024, input))
        .context(
            "this is not a keysafe backup, or it was modified (the age header does not parse)",
        )?;
    let r = dec
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .context("cannot decrypt the backup: none of the given identities is a recipient, or the header was modified")?;
    Ok(Box::new(std::io::BufReader::with_capacity(64 * 1024, r)))
}

/// Turns a reader's records into a stream (for `Store::import`), read on a blocking thread as
/// the stream is consumed. The stream ends cleanly only after the end line was read and the
/// signature checked; any failure ends it with an error. The handle answers what was verified,
/// or the reader's error.
pub fn records<R: BufRead + Send + 'static>(
    mut reader: ContainerReader<R>,
) -> (
    RecordStream,
    tokio::task::JoinHandle<Result<Verified, ContainerError>>,
) {
    let (tx, stream) = keysafe_core::store::export::record_channel(64);
    let handle = tokio::task::spawn_blocking(move || {
        loop {
            match reader.next_record() {
                Ok(Some(r)) => {
                    if !tx.blocking_send(r) {
                        return Err(ContainerError::Invalid(
                            "the import stopped before the end of the backup".into(),
                        ));
                    }
                }
                Ok(None) => {
                    let verified = reader
                        .verified()
                        .cloned()
                        .ok_or_else(|| ContainerError::Invalid("the backup has no end".into()))?;
                    tx.blocking_done();
                    return Ok(verified);
                }
                Err(e) => {
                    tx.blocking_fail(StoreError::Corrupt(e.to_string()));
                    return Err(e);
                }
            }
        }
    });
    (stream, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient() -> (String, age::x25519::Recipient) {
        let r = age::x25519::Identity::generate().to_public();
        (r.to_string(), r)
    }

    #[test]
    fn key_bearing_backups_over_the_api_go_only_to_pinned_recipients() {
        let (pinned_s, pinned) = recipient();
        let (_, other) = recipient();
        let store_only = Includes::default();
        let parts = [
            Includes {
                root_key: true,
                ..Default::default()
            },
            Includes {
                tls_key: true,
                ..Default::default()
            },
            Includes {
                admin_identity: true,
                ..Default::default()
            },
        ];
        // The store alone: to anyone, pinned or not.
        assert!(check_online(&store_only, std::slice::from_ref(&other), &[]).is_ok());
        for inc in &parts {
            // Nothing pinned: never.
            assert!(matches!(
                check_online(inc, std::slice::from_ref(&pinned), &[]),
                Err(BackupError::Forbidden(_))
            ));
            // A recipient not pinned, alone or beside a pinned one: never.
            let pins = std::slice::from_ref(&pinned_s);
            assert!(check_online(inc, std::slice::from_ref(&other), pins).is_err());
            assert!(check_online(inc, &[pinned.clone(), other.clone()], pins).is_err());
            // Only pinned recipients: yes.
            assert!(check_online(inc, std::slice::from_ref(&pinned), pins).is_ok());
        }
    }
}
