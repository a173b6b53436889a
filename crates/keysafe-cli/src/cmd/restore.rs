//! `keysafe restore`: rebuilds a data directory from a backup, on any host, under any name and
//! address. The server keeps its TLS key (so its fingerprint, which clients pinned); a new host
//! name or address gets a certificate re-issued for the same key. The restored keyring is opened
//! before anything is kept: a backup whose seal cannot be opened here (HSM key not reachable,
//! root key missing) leaves nothing behind.

use crate::cli::RestoreArgs;
use crate::cmd::secrets;
use crate::output;
use anyhow::{Context, bail};
use keysafe_core::keyring::Keyring;
use keysafe_server::backup::{DB_ENTRY, ROOT_KEY_ENTRY, load_identities, open};
use keysafe_server::config::{CONFIG_FILE, Config, SealConfig};
use keysafe_server::init::is_uninitialised;
use keysafe_server::seal::{SealInputs, open_seal};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub url: String,
    pub hostname: String,
    pub server_fingerprint: keysafe_proto::ClientFingerprint,
    pub seal: String,
    /// False for a passphrase seal restored without its passphrase (it starts sealed).
    pub keyring_checked: bool,
}

fn set_server_key(text: &str, key: &str, value: &str) -> String {
    let mut out = String::new();
    let mut section = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_owned();
        }
        if section == "[server]"
            && (t.starts_with(&format!("{key} ")) || t.starts_with(&format!("{key}=")))
        {
            out.push_str(&format!("{key} = {value:?}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub async fn restore(args: &RestoreArgs) -> anyhow::Result<Restored> {
    if !is_uninitialised(&args.data_dir) {
        bail!(
            "{} is not empty; restore only into a new or empty directory",
            args.data_dir.display()
        );
    }
    let ids = load_identities(&args.identities)?;
    let bytes = std::fs::read(&args.from)
        .with_context(|| format!("cannot read {}", args.from.display()))?;
    let opened = open(&bytes, &ids)?;
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
    let r = build(args, &opened, staging.path(), &target).await?;
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

async fn build(
    args: &RestoreArgs,
    opened: &keysafe_server::backup::Opened,
    dir: &Path,
    target: &Path,
) -> anyhow::Result<Restored> {
    for (e, b) in &opened.files {
        // The root key goes where the configuration says, and the database where the storage
        // configuration keeps it (below).
        if e.name == ROOT_KEY_ENTRY || e.name == DB_ENTRY {
            continue;
        }
        write_file(dir, &e.name, b)?;
    }
    let config_path = dir.join(CONFIG_FILE);
    let mut text =
        std::fs::read_to_string(&config_path).context("the backup has no configuration file")?;
    if let Some(l) = args.listen {
        text = set_server_key(&text, "listen", &l.to_string());
    }
    if let Some(h) = &args.hostname {
        text = set_server_key(&text, "hostname", h);
    }
    std::fs::write(&config_path, &text)?;
    // Paths in the configuration are relative to the data directory, so parse against the
    // staging directory to check, and report the final one.
    let mut config = Config::parse(dir, &text)?;

    // The root key: from the backup, or given now.
    if let SealConfig::File { root_key_file } = &config.seal {
        let rel = root_key_file
            .strip_prefix(dir)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| PathBuf::from("root.key"));
        let key = if let Some((_, b)) = opened.files.iter().find(|(e, _)| e.name == ROOT_KEY_ENTRY)
        {
            zeroize::Zeroizing::new(b.to_vec())
        } else if let Some(p) = &args.root_key {
            zeroize::Zeroizing::new(
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

    // A new name or address: re-issue the certificate for the same key (same fingerprint).
    if args.listen.is_some() || args.hostname.is_some() {
        let key_pem = zeroize::Zeroizing::new(std::fs::read_to_string(&config.tls_key)?);
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

    // Open the keyring with the restored seal, so a backup that cannot be opened here is refused
    // now rather than at the first request.
    let (_, db) = opened
        .files
        .iter()
        .find(|(e, _)| e.name == DB_ENTRY)
        .context("the backup has no database")?;
    keysafe_store::snapshot::install(&config.storage, db)
        .await
        .with_context(|| format!("cannot restore the database into {}", config.storage))?;
    let store = keysafe_store::open(&config.storage).await?;
    let records = store.load_keks().await?;
    let passphrase = match config.seal {
        SealConfig::Passphrase => secrets::passphrase(
            args.secrets.passphrase_file.as_deref(),
            "keysafe passphrase: ",
            false,
        )?,
        _ => None,
    };
    let opened_seal = open_seal(&config, &SealInputs { passphrase }, &records)
        .await
        .and_then(|r| r.map_err(anyhow::Error::from));
    let seal = match opened_seal {
        Ok(s) => s,
        Err(e) if matches!(config.seal, SealConfig::Pkcs11 { .. }) => {
            let mut found: Vec<String> = records.iter().map(|r| r.seal.clone()).collect();
            found.dedup();
            bail!(
                "this backup is sealed by an HSM key ({}) that cannot be used here: {e:#}. Restore it on a host that reaches that HSM token and key, with its PIN",
                found.join(", ")
            );
        }
        Err(e) => return Err(e),
    };
    let checked = match seal {
        Some(seal) => {
            tokio::task::spawn_blocking(move || Keyring::open(seal, &records))
                .await?
                .context("the restored keyring does not open with its seal")?;
            true
        }
        None => false,
    };
    store.close().await;
    let final_config = Config::parse(target, &text)?;
    Ok(Restored {
        data_dir: target.to_owned(),
        url: final_config.local_url(),
        hostname: final_config.hostname.clone(),
        server_fingerprint: identity.fingerprint,
        seal: config.seal.kind().to_owned(),
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
