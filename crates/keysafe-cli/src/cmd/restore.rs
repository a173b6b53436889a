//! `keysafe restore`: rebuilds a data directory from a backup, on any host, under any name and
//! address, into any storage (`--storage`: a backup taken on SQLite restores into PostgreSQL and
//! the reverse). The backup is read as a stream: files first, then the store's records, imported
//! as they are decrypted (memory stays flat whatever the store's size). The server keeps its TLS
//! key (so its fingerprint, which clients pinned); a new host name or address gets a certificate
//! re-issued for the same key.
//!
//! Nothing is kept unless everything checks out: the import commits only after the backup was
//! read to its signed end, its signature verified, and the keyring it carries opened with the
//! restored seal and shown to unwrap the audit key that signed it (so a backup re-signed by
//! someone without the keyring is refused). A failure leaves no data directory and an empty
//! database. A PKCS#11 module path a backup names is never loaded unless the operator confirms
//! it (`--pkcs11-module`).

use crate::cli::RestoreArgs;
use crate::cmd::secrets;
use crate::output;
use anyhow::{Context, bail};
use futures_util::StreamExt;
use keysafe_core::audit::AuditSigner;
use keysafe_core::keyring::Keyring;
use keysafe_core::store::{AuditKeyRecord, KekRecord, RecordStream, StoreError};
use keysafe_server::backup::{
    ContainerError, ContainerReader, Opened, ROOT_KEY_ENTRY, Verified, decrypt, load_identities,
};
use keysafe_server::config::{CONFIG_FILE, Config, SealConfig};
use keysafe_server::init::is_uninitialised;
use keysafe_server::seal::{SealInputs, open_seal};
use serde::Serialize;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

#[derive(Debug, Serialize)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub url: String,
    pub hostname: String,
    pub server_fingerprint: keysafe_proto::ClientFingerprint,
    pub seal: String,
    /// Where the store was restored (never with a password).
    pub storage: String,
    /// Records imported.
    pub records: u64,
    /// False for a passphrase seal restored without its passphrase (it starts sealed; the
    /// backup's signature was checked against the audit key it carries, but that key could not
    /// be unwrapped to tie it to the keyring).
    pub keyring_checked: bool,
}

/// Sets `key = value` in `[section]` of a TOML text, adding the key (and the section) when
/// missing. Only for the flat keys keysafe.toml uses.
fn set_key(text: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut out = String::new();
    let mut current = String::new();
    let mut done = false;
    let mut seen_section = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if current == header && !done {
                out.push_str(&format!("{key} = {value:?}\n"));
                done = true;
            }
            current = t.to_owned();
            seen_section |= current == header;
        }
        if current == header
            && (t.starts_with(&format!("{key} ")) || t.starts_with(&format!("{key}=")))
        {
            if !done {
                out.push_str(&format!("{key} = {value:?}\n"));
                done = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !done {
        if !seen_section {
            out.push_str(&format!("\n{header}\n"));
        }
        out.push_str(&format!("{key} = {value:?}\n"));
    }
    out
}

/// Replaces the `[storage]` section of a TOML text (or adds one).
fn replace_storage(text: &str, section: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            skipping = t == "[storage]";
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(section);
    out
}

type Reader = ContainerReader<Box<dyn BufRead + Send>>;

pub async fn restore(args: &RestoreArgs) -> anyhow::Result<Restored> {
    if !is_uninitialised(&args.data_dir) {
        bail!(
            "{} is not empty; restore only into a new or empty directory",
            args.data_dir.display()
        );
    }
    let ids = load_identities(&args.identities)?;
    let f = std::fs::File::open(&args.from)
        .with_context(|| format!("cannot read {}", args.from.display()))?;
    // The age header, the manifest and the files; the records stay in the stream.
    let (reader, opened) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let input = decrypt(f, &ids)?;
        Ok(ContainerReader::open(input)?)
    })
    .await??;
    // Build in a sibling directory and move it into place only when everything checks out.
    let target = std::path::absolute(&args.data_dir)?;
    let parent = target
        .parent()
        .context("the data directory has no parent")?
        .to_owned();
    std::fs::create_dir_all(&parent)?;
    let staging = tempfile::Builder::new()
        .prefix(".keysafe-restore-")
        .tempdir_in(&parent)?;
    let r = build(args, reader, &opened, staging.path(), &target).await?;
    if target.exists() {
        std::fs::remove_dir(&target)
            .with_context(|| format!("cannot replace the empty {}", target.display()))?;
    }
    let staged = staging.keep();
    // Everything in the staging directory on disk, then the rename, then its directory.
    keysafe_core::fs::sync_tree(&staged)
        .with_context(|| format!("cannot sync {}", staged.display()))?;
    keysafe_core::fs::rename(&staged, &target)
        .with_context(|| format!("cannot move the restored data into {}", target.display()))?;
    Ok(r)
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let path = dir.join(name);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    // Everything restored is private: keys, identities, and a database full of ciphertext.
    let mut f = keysafe_core::seal::open_options_private()
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// What the records' consumer checks once the backup was read to its signed end, before the
/// import commits.
struct EndCheck {
    config: Config,
    passphrase: Option<Zeroizing<String>>,
    /// The keyring and audit key records seen in the stream.
    keks: Vec<KekRecord>,
    audit_keys: Vec<AuditKeyRecord>,
    reader: Option<tokio::task::JoinHandle<Result<Verified, ContainerError>>>,
    /// Why the check failed (the import only sees a store error), or what it established.
    outcome: Arc<Mutex<Option<anyhow::Result<bool>>>>,
}

impl EndCheck {
    fn see(&mut self, r: &keysafe_core::store::ExportRecord) {
        if let Some(k) = r.as_kek() {
            self.keks.push(k);
        } else if let Some(a) = r.as_audit_key() {
            self.audit_keys.push(a);
        }
    }

    /// Whether the backup verified and its keyring opens with the restored seal and unwraps
    /// the audit key that signed it; `Ok(false)` when the seal could not be opened for want of
    /// a passphrase.
    async fn run(&mut self) -> anyhow::Result<bool> {
        let verified = match self.reader.take() {
            Some(h) => h.await??,
            None => bail!("the backup was not read to its end"),
        };
        let seal = match open_seal(
            &self.config,
            &SealInputs {
                passphrase: self.passphrase.take(),
            },
            &self.keks,
        )
        .await
        .and_then(|r| r.map_err(anyhow::Error::from))
        {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(false),
            Err(e) if matches!(self.config.seal, SealConfig::Pkcs11 { .. }) => {
                let mut found: Vec<String> = self.keks.iter().map(|r| r.seal.clone()).collect();
                found.dedup();
                bail!(
                    "this backup is sealed by an HSM key ({}) that cannot be used here: {e:#}. Restore it on a host that reaches that HSM token and key, with its PIN",
                    found.join(", ")
                );
            }
            Err(e) => return Err(e),
        };
        let keks = std::mem::take(&mut self.keks);
        let keyring = tokio::task::spawn_blocking(move || Keyring::open(seal, &keks))
            .await?
            .context("the restored keyring does not open with its seal")?;
        let key = self
            .audit_keys
            .iter()
            .find(|k| k.public_key == verified.signer_public_key)
            .context("the backup's signing key is not among its audit keys")?;
        AuditSigner::from_record(key, &keyring).map_err(|_| {
            anyhow::anyhow!(
                "the backup is signed by an audit key its keyring does not hold: it was re-signed by someone other than its server; refusing it"
            )
        })?;
        Ok(true)
    }
}

/// The backup's records as the import consumes them, checked by `check` at their end: a
/// failed check ends the stream with an error, so the import writes nothing.
fn checked_records(inner: RecordStream, check: EndCheck) -> RecordStream {
    let stream = futures_util::stream::unfold(Some((inner, check)), |state| async move {
        let (mut inner, mut check) = state?;
        match inner.next().await {
            Some(Ok(r)) => {
                check.see(&r);
                Some((Ok(r), Some((inner, check))))
            }
            Some(Err(e)) => {
                // The reader's own error says more than the store's copy of it.
                if let Some(h) = check.reader.take()
                    && let Ok(Err(ce)) = h.await
                    && let Ok(mut slot) = check.outcome.lock()
                {
                    *slot = Some(Err(anyhow::Error::from(ce)));
                }
                Some((Err(e), None))
            }
            None => {
                let r = check.run().await;
                let failed = r.as_ref().err().map(|e| format!("{e:#}"));
                if let Ok(mut slot) = check.outcome.lock() {
                    *slot = Some(r);
                }
                failed.map(|m| (Err(StoreError::Corrupt(m)), None))
            }
        }
    });
    Box::pin(stream)
}

async fn build(
    args: &RestoreArgs,
    reader: Reader,
    opened: &Opened,
    dir: &Path,
    target: &Path,
) -> anyhow::Result<Restored> {
    for (e, b) in &opened.files {
        // The root key goes where the configuration says.
        if e.name == ROOT_KEY_ENTRY {
            continue;
        }
        write_file(dir, &e.name, b)?;
    }
    let config_path = dir.join(CONFIG_FILE);
    let mut text =
        std::fs::read_to_string(&config_path).context("the backup has no configuration file")?;
    if let Some(l) = args.listen {
        text = set_key(&text, "server", "listen", &l.to_string());
    }
    if let Some(h) = &args.hostname {
        text = set_key(&text, "server", "hostname", h);
    }
    if let Some(s) = &args.storage {
        let password_file = args
            .storage_password_file
            .as_deref()
            .map(std::path::absolute)
            .transpose()?;
        text = replace_storage(
            &text,
            &keysafe_store::storage_section(
                &keysafe_store::StorageConfig::url_from_arg(s),
                password_file.as_deref(),
            ),
        );
    }
    // Paths in the configuration are relative to the data directory, so parse against the
    // staging directory to check, and report the final one.
    let mut config = Config::parse(dir, &text)?;
    // A backup names the PKCS#11 module its server loaded: a library path that restore would
    // load into this process. Only one the operator names is loaded.
    if let SealConfig::Pkcs11 { module, .. } = &mut config.seal {
        let Some(confirmed) = &args.pkcs11_module else {
            return Err(crate::exit::usage(format!(
                "this backup is sealed by an HSM through the PKCS#11 module {}; restore never loads a library a backup names: confirm it with --pkcs11-module {} (or name this host's module)",
                module.display(),
                module.display()
            )));
        };
        let confirmed = std::path::absolute(confirmed)?;
        *module = confirmed.clone();
        text = set_key(
            &text,
            "seal",
            "pkcs11_module",
            &confirmed.display().to_string(),
        );
    }
    std::fs::write(&config_path, &text)?;

    // The root key: from the backup, or given now.
    if let SealConfig::File { root_key_file } = &config.seal {
        let rel = root_key_file
            .strip_prefix(dir)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| PathBuf::from("root.key"));
        let key = if let Some(b) = opened.file(ROOT_KEY_ENTRY) {
            Zeroizing::new(b.to_vec())
        } else if let Some(p) = &args.root_key {
            Zeroizing::new(
                std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
            )
        } else {
            bail!(
                "this backup does not include the root key (it was made without --include-root-key): pass --root-key FILE"
            );
        };
        write_file(dir, &rel.to_string_lossy(), &key)?;
        config.seal = SealConfig::File {
            root_key_file: dir.join(rel),
        };
    }
    if let (SealConfig::Pkcs11 { pin_file, .. }, Some(f)) =
        (&mut config.seal, &args.secrets.pkcs11_pin_file)
    {
        *pin_file = Some(f.clone());
    }

    // The TLS key: from the backup (a backup made over the API carries it only when asked).
    if !config.tls_key.exists() {
        bail!(
            "this backup does not include the server's TLS private key, so the server's fingerprint cannot be restored: use a backup made with `keysafe admin --data-dir DIR backup create` on the server's host"
        );
    }
    // A new name or address: re-issue the certificate for the same key (same fingerprint).
    if args.listen.is_some() || args.hostname.is_some() {
        let key_pem = Zeroizing::new(std::fs::read_to_string(&config.tls_key)?);
        let mut sans = vec![config.hostname.clone()];
        let ip = if config.listen.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            config.listen.ip().to_string()
        };
        if !sans.contains(&ip) {
            sans.push(ip);
        }
        let cert = keysafe_proto::identity::reissue_self_signed(
            &key_pem,
            &config.hostname,
            &sans,
            keysafe_proto::identity::SERVER_CERT_VALIDITY,
        )?;
        std::fs::write(&config.tls_cert, cert.cert_pem.as_bytes())?;
    }
    let identity = keysafe_server::tls::load_identity(&config.tls_cert, &config.tls_key)?;
    if identity.fingerprint != opened.manifest.server_fingerprint {
        bail!("the restored TLS key does not match the backup's server fingerprint");
    }

    let passphrase = match config.seal {
        SealConfig::Passphrase => secrets::passphrase(
            args.secrets.passphrase_file.as_deref(),
            "keysafe passphrase: ",
            false,
        )?,
        _ => None,
    };
    // The store: created (SQLite inside the staging directory; keysafe's tables in a
    // PostgreSQL database), or one keysafe already initialised, which the import takes only
    // when it holds no record (a restore that failed before leaves it so).
    let store = match keysafe_store::create(&config.storage).await {
        Ok(s) => Ok(s),
        Err(StoreError::AlreadyExists) => keysafe_store::open(&config.storage).await,
        Err(e) => Err(e),
    }
    .with_context(|| format!("cannot open the storage {}", config.storage))?;
    let (records, reader) = keysafe_server::backup::records(reader);
    let outcome = Arc::new(Mutex::new(None));
    let check = EndCheck {
        config: config.clone(),
        passphrase,
        keks: Vec::new(),
        audit_keys: Vec::new(),
        reader: Some(reader),
        outcome: outcome.clone(),
    };
    let imported = store.import(checked_records(records, check)).await;
    store.close().await;
    let outcome = outcome.lock().ok().and_then(|mut o| o.take());
    let summary = match (imported, outcome) {
        (Ok(s), Some(Ok(checked))) => (s, checked),
        (_, Some(Err(e))) => return Err(e),
        (Err(StoreError::AlreadyExists), _) => bail!(
            "{} already holds data; restore only into an empty database",
            config.storage
        ),
        (Err(e), _) => {
            return Err(anyhow::Error::from(e))
                .with_context(|| format!("cannot restore the store into {}", config.storage));
        }
        (Ok(_), None) => bail!("the backup's end was not checked"),
    };
    let (summary, checked) = summary;
    let final_config = Config::parse(target, &text)?;
    Ok(Restored {
        data_dir: target.to_owned(),
        url: final_config.local_url(),
        hostname: final_config.hostname.clone(),
        server_fingerprint: identity.fingerprint,
        seal: config.seal.kind().to_owned(),
        storage: final_config.storage.to_string(),
        records: summary.total(),
        keyring_checked: checked,
    })
}

pub async fn run(args: RestoreArgs) -> anyhow::Result<()> {
    // A spinner while it decrypts, checks and writes (none when a passphrase prompt may come).
    let spinner = (!secrets::may_prompt(args.secrets.passphrase_file.as_deref()))
        .then(|| crate::progress::Progress::spinner("restoring the backup"));
    let r = restore(&args).await;
    if let Some(s) = &spinner {
        s.clear();
    }
    let r = r?;
    if args.json {
        return output::json(&r);
    }
    println!("Restored into {}.", r.data_dir.display());
    println!("Server URL:         {}", r.url);
    println!("Server fingerprint: {} (unchanged)", r.server_fingerprint);
    if !r.keyring_checked {
        println!(
            "The passphrase was not given: the server will start sealed until `keysafe admin unseal`."
        );
    }
    println!(
        "Start it with: keysafe serve --data-dir {}",
        r.data_dir.display()
    );
    Ok(())
}
