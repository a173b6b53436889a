//! `keysafe admin tls renew`: re-issues the server's self-signed certificate for the key it
//! already has, so the fingerprint clients pinned stays the same. Works on the data directory
//! (no server needed); a running server reloads the new file by itself (file watch or SIGHUP).
//! A CA-issued certificate is refused: renewing it is the CA's job, and a self-signed
//! replacement would break clients that trust the CA.

use crate::cli::TlsCommand;
use crate::exit::usage;
use crate::output;
use anyhow::{Context, bail};
use keysafe_proto::Timestamp;
use keysafe_proto::identity::{inspect_certificate, reissue_self_signed};
use keysafe_server::config::Config;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
struct Renewed {
    certificate: String,
    fingerprint: String,
    names: Vec<String>,
    not_before: String,
    not_after: String,
}

pub fn run(dir: &Path, cmd: TlsCommand, json: bool) -> anyhow::Result<()> {
    let TlsCommand::Renew {
        hostnames,
        validity,
    } = cmd;
    let config = Config::load(dir)?;
    // The same checks the server makes: a key that others can read is refused.
    let identity = keysafe_server::tls::load_identity(&config.tls_cert, &config.tls_key)?;
    let leaf = identity
        .chain
        .first()
        .with_context(|| format!("no certificate in {}", config.tls_cert.display()))?;
    let current = inspect_certificate(leaf)
        .with_context(|| format!("bad certificate in {}", config.tls_cert.display()))?;
    if !current.self_signed {
        bail!(
            "{} is issued by a CA, not self-signed: have the CA issue a new certificate for the same key (its fingerprint stays {}), then replace the file; the server reloads it",
            config.tls_cert.display(),
            identity.fingerprint
        );
    }
    if validity.as_secs() < 86400 {
        return Err(usage("--validity must be at least one day"));
    }
    let mut names: Vec<String> = Vec::new();
    for h in &hostnames {
        let h = h.trim();
        if h.is_empty() || h.contains(char::is_whitespace) || h.contains('/') {
            return Err(usage(format!(
                "--hostname {h:?} is not a DNS name or IP address"
            )));
        }
        if !names.iter().any(|n| n == h) {
            names.push(h.to_owned());
        }
    }
    if names.is_empty() {
        names = current.subject_alt_names.clone();
    }
    if names.is_empty() {
        names.push(config.hostname.clone());
    }
    let common_name = if hostnames.is_empty() {
        current
            .common_name
            .clone()
            .unwrap_or_else(|| names[0].clone())
    } else {
        names[0].clone()
    };
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(&config.tls_key)
            .with_context(|| format!("cannot read {}", config.tls_key.display()))?,
    );
    let cert = reissue_self_signed(&key_pem, &common_name, &names, validity)
        .map_err(|e| usage(format!("cannot issue the certificate: {e}")))?;
    if cert.fingerprint != identity.fingerprint {
        bail!("the re-issued certificate has another fingerprint; nothing was written");
    }
    replace_keeping_owner(&config.tls_cert, cert.cert_pem.as_bytes())?;
    let info = inspect_certificate(&cert.cert_der)?;
    let at = |s: i64| Timestamp::from_unix_millis(s.saturating_mul(1000)).to_rfc3339();
    let out = Renewed {
        certificate: config.tls_cert.display().to_string(),
        fingerprint: cert.fingerprint.to_string(),
        names: info.subject_alt_names.clone(),
        not_before: at(info.not_before),
        not_after: at(info.not_after),
    };
    if json {
        return output::json(&out);
    }
    println!(
        "Renewed {} for {} (valid until {}).",
        out.certificate,
        out.names.join(", "),
        out.not_after
    );
    println!(
        "Fingerprint unchanged: {}. A running server loads it within server.tls_reload_interval, or now on SIGHUP (systemctl reload keysafe).",
        out.fingerprint
    );
    Ok(())
}

/// Writes `path` anew (temporary file, fsync, rename), keeping the old file's mode and owner
/// so that the server's user can still read it when root runs the command.
fn replace_keeping_owner(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let dir = path
        .parent()
        .with_context(|| format!("{} has no directory", path.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    std::fs::set_permissions(tmp.path(), meta.permissions())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Only root can give a file away; for anyone else the owner is already theirs.
        let _ = std::os::unix::fs::chown(tmp.path(), Some(meta.uid()), Some(meta.gid()));
    }
    tmp.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}
