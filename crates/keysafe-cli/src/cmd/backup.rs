//! Backup files on the command line: `keysafe backup verify FILE --identity ...` (decrypts and
//! checks a backup as a stream: every record, the counts, the signature; needs no server),
//! `keysafe backup keygen`, `keysafe admin --data-dir DIR backup create` (a backup made on the
//! server's host from its data directory, signed with the audit key the keyring unwraps) and
//! the writing of a backup file (a temporary file beside the output, renamed into place only
//! when the whole backup was written and synced, so a failed backup leaves nothing).

use crate::cli::{BackupCommand, SealSecretArgs};
use crate::cmd::secrets;
use crate::exit::usage;
use crate::output;
use anyhow::Context;
use keysafe_core::audit::AuditSigner;
use keysafe_core::keyring::Keyring;
use keysafe_server::backup::{
    BackupError, BackupSources, Includes, Manifest, Origin, container, decrypt, load_identities,
    parse_recipients,
};
use keysafe_server::config::{Config, SealConfig};
use keysafe_server::seal::{SealInputs, open_seal};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `keysafe backup verify` established.
#[derive(Debug, Serialize)]
pub struct Verified {
    pub manifest: Manifest,
    /// Records per kind.
    pub records: BTreeMap<String, u64>,
    pub total: u64,
    pub orgs: u64,
    pub clients: u64,
    /// The audit key that signed the backup (hex SHA-256 of its public key).
    pub signed_by: String,
}

/// Decrypts and checks a backup as it is read: age's authentication of every chunk, the
/// container, every file's checksum, every record, the counts and the signature.
pub async fn verify(file: &Path, identities: &[PathBuf]) -> anyhow::Result<Verified> {
    let ids = load_identities(identities)?;
    let f = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (opened, v) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let input = decrypt(f, &ids)?;
        Ok(container::read_all(input, |_| {})?)
    })
    .await??;
    let count = |k: &str| v.trailer.records.get(k).copied().unwrap_or(0);
    Ok(Verified {
        orgs: count("orgs"),
        clients: count("clients"),
        total: v.trailer.total,
        records: v.trailer.records.clone(),
        signed_by: v.signer_key_id,
        manifest: opened.manifest.clone(),
    })
}

/// Writes a new age identity to `output` (0600) and returns its recipient.
pub fn keygen(output: &Path) -> anyhow::Result<String> {
    use age::secrecy::ExposeSecret;
    use std::io::Write;
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let mut f = keysafe_core::seal::open_options_private()
        .open(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    writeln!(
        f,
        "# created: {}\n# public key: {recipient}\n{}",
        keysafe_proto::Timestamp::now(),
        id.to_string().expose_secret()
    )?;
    f.sync_all()?;
    Ok(recipient)
}

/// A backup file being written: a private temporary file beside the output, renamed into
/// place by [`Output::persist`] (dropped before that, it is removed).
pub struct Output {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl Output {
    /// Refuses an existing output (usage error), and makes the temporary file (mode 0600).
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            return Err(usage(format!(
                "{} exists; refusing to overwrite it",
                path.display()
            )));
        }
        let path = std::path::absolute(path)?;
        let dir = path.parent().context("the output has no directory")?;
        let tmp = tempfile::Builder::new()
            .prefix(".keysafe-backup-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        Ok(Self { tmp, path })
    }

    pub fn file(&mut self) -> &mut std::fs::File {
        self.tmp.as_file_mut()
    }

    /// Syncs the file, renames it to the output (never over an existing file) and syncs the
    /// directory.
    pub fn persist(self) -> anyhow::Result<PathBuf> {
        self.tmp.as_file().sync_all()?;
        self.tmp
            .persist_noclobber(&self.path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        if let Some(d) = self.path.parent() {
            keysafe_core::fs::sync_dir(d)?;
        }
        Ok(self.path)
    }
}

/// The keyring of a data directory (or of a backup's records), opened with its seal: the
/// passphrase from `secrets` (file, environment or prompt), the HSM PIN from `secrets` or the
/// configuration. `None` for a passphrase seal when no passphrase was given.
pub async fn open_keyring(
    config: &Config,
    secrets_args: &SealSecretArgs,
    keks: &[keysafe_core::store::KekRecord],
) -> anyhow::Result<Option<Keyring>> {
    let passphrase = match config.seal {
        SealConfig::Passphrase => secrets::passphrase(
            secrets_args.passphrase_file.as_deref(),
            "keysafe passphrase: ",
            false,
        )?,
        _ => None,
    };
    let Some(seal) = open_seal(config, &SealInputs { passphrase }, keks)
        .await?
        .map_err(anyhow::Error::from)?
    else {
        return Ok(None);
    };
    let keks = keks.to_vec();
    let keyring = tokio::task::spawn_blocking(move || Keyring::open(seal, &keks))
        .await?
        .context("the keyring does not open with its seal")?;
    Ok(Some(keyring))
}

fn refused(e: BackupError) -> anyhow::Error {
    match e {
        BackupError::Refused(m) | BackupError::Forbidden(m) => usage(m),
        BackupError::Failed(m) => anyhow::anyhow!(m),
    }
}

/// `keysafe admin --data-dir DIR backup create`: a backup made from the data directory on the
/// server's host, by whoever can read its files (a running server may keep serving: the
/// store's export is one consistent snapshot). It always carries the TLS key (restoring the
/// same fingerprint needs it); the root key and the administrator identity only when asked.
pub async fn create_offline(
    dir: &Path,
    recipients: &[String],
    includes: Includes,
    out: &Path,
    secrets_args: &SealSecretArgs,
    json: bool,
) -> anyhow::Result<()> {
    let recipients = parse_recipients(recipients).map_err(usage)?;
    let mut output = Output::create(out)?;
    // Shared with running servers; refused while a seal migration works on the directory.
    let _lock = keysafe_core::fs::DataDirLock::shared(dir)?;
    let mut config = Config::load(dir)?;
    if let (SealConfig::Pkcs11 { pin_file, .. }, Some(f)) =
        (&mut config.seal, &secrets_args.pkcs11_pin_file)
    {
        *pin_file = Some(f.clone());
    }
    let src = BackupSources::of(&config);
    let includes = Includes {
        tls_key: true,
        ..includes
    };
    let fingerprint =
        keysafe_server::tls::load_identity(&config.tls_cert, &config.tls_key)?.fingerprint;
    let store = keysafe_store::open(&config.storage)
        .await
        .with_context(|| format!("cannot open the storage {}", config.storage))?;
    let keks = store.load_keks().await?;
    let keyring = open_keyring(&config, secrets_args, &keks)
        .await?
        .context(
            "the backup is signed with the audit key, which the keyring unwraps: give the passphrase (--passphrase-file or KEYSAFE_PASSPHRASE)",
        )?;
    let signer = AuditSigner::load(store.as_ref(), &keyring)
        .await?
        .context("this data directory has no audit signing key yet: start the server once")?;
    let plan = keysafe_server::backup::plan(
        &src,
        &fingerprint,
        includes,
        Origin::DataDir,
        signer.key_id(),
    )
    .map_err(refused)?;
    let records = store.export().await?;
    let rt = tokio::runtime::Handle::current();
    let file = output.file().try_clone()?;
    let spinner = crate::progress::Progress::spinner("writing the backup");
    let written = tokio::task::spawn_blocking(move || {
        keysafe_server::backup::write(file, &plan, records, &signer, &recipients, &rt)
    })
    .await?;
    spinner.clear();
    store.close().await;
    let (_, trailer) = written.map_err(refused)?;
    let path = output.persist()?;
    report(&path, &includes, Some(trailer.total), json)
}

/// What `backup create` prints.
pub fn report(
    path: &Path,
    includes: &Includes,
    records: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let bytes = std::fs::metadata(path)?.len();
    if json {
        return output::json(&serde_json::json!({
            "output": path.display().to_string(),
            "bytes": bytes,
            "records": records,
            "root_key_included": includes.root_key,
            "tls_key_included": includes.tls_key,
            "admin_identity_included": includes.admin_identity,
        }));
    }
    let mut with = Vec::new();
    if includes.root_key {
        with.push("root key");
    }
    if includes.tls_key {
        with.push("TLS key");
    }
    if includes.admin_identity {
        with.push("administrator identity");
    }
    eprintln!(
        "Backup written to {} ({bytes} bytes{}{}).",
        path.display(),
        records
            .map(|n| format!(", {n} records"))
            .unwrap_or_default(),
        if with.is_empty() {
            String::new()
        } else {
            format!("; includes the {}", with.join(", "))
        }
    );
    Ok(())
}

pub async fn run(cmd: BackupCommand) -> anyhow::Result<()> {
    let (file, identities, json) = match cmd {
        BackupCommand::Keygen { output } => {
            println!("{}", keygen(&output)?);
            return Ok(());
        }
        BackupCommand::Verify {
            file,
            identities,
            json,
        } => (file, identities, json),
    };
    let spinner = crate::progress::Progress::spinner("decrypting and checking the backup");
    let v = verify(&file, &identities).await;
    spinner.clear();
    let v = v?;
    if json {
        return output::json(&v);
    }
    let m = &v.manifest;
    println!("Backup {} is intact and signed.", file.display());
    println!("  created          {}", m.created_at);
    println!("  keysafe version  {}", m.keysafe_version);
    println!("  made             {:?}", m.origin);
    println!("  server           {}", m.server_fingerprint);
    println!("  seal             {}", m.seal);
    println!(
        "  includes         root key: {}, TLS key: {}, administrator identity: {}",
        m.includes.root_key, m.includes.tls_key, m.includes.admin_identity
    );
    println!("  signed by        audit key {}", v.signed_by);
    println!("  records          {}", v.total);
    for (k, n) in &v.records {
        println!("    {k:<26} {n:>10}");
    }
    for e in &m.files {
        println!("  {:<28} {:>10} bytes  sha256 {}", e.name, e.size, e.sha256);
    }
    Ok(())
}
