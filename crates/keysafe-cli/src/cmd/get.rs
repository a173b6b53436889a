//! `keysafe get NAME [--version N] [-o FILE] [--json]`: raw bytes to stdout, or to a file
//! created with mode 0600 (written to a temporary file first, then renamed into place). With
//! `--json`, one JSON object instead: the version's metadata and where its bytes came from, with
//! the payload in base64 (`payload_base64`) unless `-o` wrote it to a file (`output`).

use crate::cli::GetArgs;
use crate::cmd::{client_for, deposit_name, vault_for, version_arg};
use crate::output;
use anyhow::Context;
use base64::Engine;
use keysafe_client::{CacheUse, ClientError, KeysafeClient, Source};
use keysafe_proto::{DepositName, ErrorCode};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

/// `get --json`.
#[derive(Serialize)]
struct GetJson {
    name: String,
    /// `--owner`, when the deposit is another principal's.
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    version: u64,
    /// `age` (decrypted here, unless --raw) or `raw`.
    encoding: &'static str,
    /// Whether `payload_base64` / the file holds the decrypted payload or the stored bytes.
    decrypted: bool,
    /// Bytes written (the payload, decrypted unless --raw).
    size: usize,
    /// `server`, `validated` (a server confirmed the cached copy), `cache` (ttl mode) or
    /// `stale` (no server answered; see `stale_reason`).
    source: &'static str,
    /// Seconds since a server last confirmed the copy, for `cache` and `stale`.
    #[serde(skip_serializing_if = "Option::is_none")]
    age_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stale_reason: Option<String>,
    /// The file `-o` wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    /// The payload, base64 (standard alphabet), when no `-o` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<Zeroizing<String>>,
}

pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    let name = deposit_name(&args.name)?;
    let version = version_arg(args.version)?;
    let (home, client) = client_for(&args.client)?;
    let cache_use = if args.no_cache {
        CacheUse::Refresh
    } else {
        CacheUse::Normal
    };
    let owner = args.owner.as_deref();
    let fetched = if args.raw {
        client
            .get_of(owner, &name, version, cache_use)
            .await
            .map(|f| keysafe_client::vault::Opened {
                version: f.version,
                encoding: keysafe_proto::api::Encoding::Raw,
                plaintext: Zeroizing::new(f.payload.to_vec()),
                source: f.source,
            })
    } else {
        vault_for(&home, client.clone())?
            .get(owner, &name, version, cache_use)
            .await
    };
    let fetched = match fetched {
        Ok(f) => f,
        Err(e) => return Err(with_shared_hint(&client, owner, &name, e).await),
    };
    if let Source::Stale { age, reason } = &fetched.source {
        // One line, on stderr, so the payload on stdout stays clean.
        eprintln!(
            "keysafe: warning: serving a cached copy of {name} version {} last confirmed by a server {} ago: {}",
            fetched.version,
            humantime::format_duration(std::time::Duration::from_secs(age.as_secs())),
            reason.replace('\n', " ")
        );
    }
    let to_file = args.output.as_ref().filter(|p| p.as_os_str() != "-");
    if let Some(path) = to_file {
        write_private(path, &fetched.plaintext)?;
        if !args.client.json {
            eprintln!(
                "Wrote {} version {} ({} bytes) to {}.",
                name,
                fetched.version,
                fetched.plaintext.len(),
                path.display()
            );
        }
    }
    if args.client.json {
        let (source, age_s, stale_reason) = match &fetched.source {
            Source::Server => ("server", None, None),
            Source::Validated => ("validated", None, None),
            Source::Cache { age } => ("cache", Some(age.as_secs()), None),
            Source::Stale { age, reason } => ("stale", Some(age.as_secs()), Some(reason.clone())),
        };
        return output::json(&GetJson {
            name: name.to_string(),
            owner: args.owner.clone(),
            version: fetched.version.get(),
            encoding: if args.raw {
                "raw"
            } else {
                fetched.encoding.as_str()
            },
            decrypted: !args.raw && fetched.encoding == keysafe_proto::api::Encoding::Age,
            size: fetched.plaintext.len(),
            source,
            age_s,
            stale_reason,
            output: to_file.map(|p| p.display().to_string()),
            payload_base64: to_file.is_none().then(|| {
                Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(&*fetched.plaintext),
                )
            }),
        });
    }
    if to_file.is_none() {
        let mut out = std::io::stdout().lock();
        out.write_all(&fetched.plaintext)?;
        out.flush()?;
    }
    Ok(())
}

/// A name that is not the caller's own but was shared with it under that name: say how to
/// reach it. Costs one request, and only when the get failed with `not_found`.
async fn with_shared_hint(
    client: &KeysafeClient,
    owner: Option<&str>,
    name: &DepositName,
    e: ClientError,
) -> anyhow::Error {
    if owner.is_some() || e.code() != Some(ErrorCode::NotFound) {
        return e.into();
    }
    let Ok(shared) = client.shared().await else {
        return e.into();
    };
    let owners: Vec<&str> = shared
        .deposits
        .iter()
        .filter(|d| &d.name == name)
        .map(|d| d.owner.as_str())
        .collect();
    match owners.as_slice() {
        [] => e.into(),
        [one] => anyhow::Error::new(e).context(format!(
            "you have no deposit {name}, but {one} shares one of that name with you: keysafe get {name} --owner {one} (keysafe shared lists what is shared with you)"
        )),
        many => anyhow::Error::new(e).context(format!(
            "you have no deposit {name}, but {} owners share one of that name with you ({}): add --owner (keysafe shared lists them)",
            many.len(),
            many.join(", ")
        )),
    }
}

/// Writes the plaintext to `path`: a new or regular file is replaced atomically (a temporary file
/// with mode 0600, synced, then renamed over it), so a reader never sees half a key. Anything else
/// that already exists there (`/dev/null`, `/dev/stdout`, a pipe, a terminal) is written into
/// directly: renaming over it would replace a device node with a regular file.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
    {
        if meta.is_dir() {
            anyhow::bail!("{} is a directory", path.display());
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        return f
            .write_all(bytes)
            .and_then(|_| f.flush())
            .with_context(|| format!("cannot write {}", path.display()));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.keysafe-tmp", file_name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
