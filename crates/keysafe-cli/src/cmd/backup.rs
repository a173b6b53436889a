//! `keysafe backup verify FILE --identity ...`: decrypts a backup, checks every checksum, opens
//! the database copy and prints what is inside. Needs no server.

use crate::cli::BackupCommand;
use crate::output;
use anyhow::Context;
use keysafe_server::backup::{DB_ENTRY, Manifest, load_identities, open};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Verified {
    pub manifest: Manifest,
    pub orgs: usize,
    pub clients: usize,
    pub keyring_versions: Vec<u32>,
    pub data_keys: u64,
}

/// Decrypts and checks a backup, and counts what its database holds.
pub async fn verify(
    file: &std::path::Path,
    identities: &[std::path::PathBuf],
) -> anyhow::Result<Verified> {
    let ids = load_identities(identities)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let opened = open(&bytes, &ids)?;
    let tmp = tempfile::tempdir()?;
    let db = tmp.path().join(DB_ENTRY);
    for (e, b) in &opened.files {
        if e.name == DB_ENTRY {
            std::fs::write(&db, &b[..])?;
        }
    }
    let store = keysafe_store::snapshot::open(&db)
        .await
        .context("the database in the backup does not open")?;
    let mut versions: Vec<u32> = store.load_keks().await?.iter().map(|k| k.version).collect();
    versions.sort_unstable();
    versions.dedup();
    let v = Verified {
        orgs: store.list_orgs().await?.len(),
        clients: store.list_clients(None, None).await?.len(),
        data_keys: store.kek_usage().await?.iter().map(|u| u.count).sum(),
        keyring_versions: versions,
        manifest: opened.manifest,
    };
    store.close().await;
    Ok(v)
}

/// Writes a new age identity to `output` (0600) and returns its recipient.
pub fn keygen(output: &std::path::Path) -> anyhow::Result<String> {
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
    println!("Backup {} is intact.", file.display());
    println!("  created          {}", m.created_at);
    println!("  keysafe version  {}", m.keysafe_version);
    println!("  server           {}", m.server_fingerprint);
    println!(
        "  seal             {}{}",
        m.seal,
        if m.includes_root_key {
            " (root key included)"
        } else {
            ""
        }
    );
    println!(
        "  contents         {} organisations, {} clients, {} data keys, keyring versions {:?}",
        v.orgs, v.clients, v.data_keys, v.keyring_versions
    );
    for e in &m.files {
        println!("  {:<28} {:>10} bytes  sha256 {}", e.name, e.size, e.sha256);
    }
    Ok(())
}
