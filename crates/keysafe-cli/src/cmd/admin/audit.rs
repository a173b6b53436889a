//! `keysafe admin audit verify|export|prune`. Verification runs here, in the client, against
//! the public key: the server hands over its entries and checkpoints and is not trusted to
//! judge them. A prune archives and checks the entries here before it asks the server to
//! delete them.

use crate::cli::AuditCommand;
use crate::exit::{SecurityError, usage};
use crate::output;
use crate::progress::Progress;
use anyhow::Context;
use keysafe_client::KeysafeClient;
use keysafe_proto::audit::ChainVerifier;
use std::io::Write;

const PAGE: u32 = 10_000;

/// `--since`: a date (`2026-12-01`, midnight UTC) or an RFC 3339 time, as the RFC 3339 time the
/// server takes.
fn parse_since(s: &str) -> anyhow::Result<String> {
    let bad = || {
        usage(format!(
            "--since: {s:?} is neither a date (2026-12-01) nor an RFC 3339 time \
             (2026-12-01T08:00:00Z)"
        ))
    };
    let is_date = s.len() == 10
        && s.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    let rfc3339 = if is_date {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    keysafe_proto::Timestamp::parse_rfc3339(&rfc3339).map_err(|_| bad())?;
    Ok(rfc3339)
}

/// Writes the export's JSON lines: the public key, every entry from `start` on (none when
/// `None`), then every checkpoint from the first written entry on. Answers how many entries and
/// checkpoints it wrote.
async fn export(
    client: &KeysafeClient,
    out: &mut (dyn Write + Send),
    key: &impl serde::Serialize,
    start: Option<u64>,
) -> anyhow::Result<(u64, usize)> {
    writeln!(out, "{}", serde_json::json!({ "public_key": key }))?;
    let mut first: Option<u64> = None;
    let mut entries = 0u64;
    if let Some(start) = start {
        let mut next = start.max(1);
        loop {
            let page = client.audit_entries(next, None, PAGE).await?;
            let Some(last) = page.entries.last().map(|e| e.seq) else {
                break;
            };
            first.get_or_insert(page.entries[0].seq);
            for e in &page.entries {
                writeln!(out, "{}", serde_json::json!({ "entry": e }))?;
            }
            entries += page.entries.len() as u64;
            // A short page is the last; one that does not move forward would loop for ever (a
            // tampered seq column).
            if (page.entries.len() as u32) < PAGE || last < next {
                break;
            }
            next = last.saturating_add(1);
        }
    }
    let checkpoints = client
        .audit_checkpoints(first.unwrap_or(u64::MAX))
        .await?
        .checkpoints;
    for c in &checkpoints {
        writeln!(out, "{}", serde_json::json!({ "checkpoint": c }))?;
    }
    out.flush()?;
    Ok((entries, checkpoints.len()))
}

/// What a prune archived and deleted.
#[derive(serde::Serialize)]
struct PruneReport {
    archive: std::path::PathBuf,
    archive_sha256: String,
    first: u64,
    through: u64,
    entries: u64,
    checkpoints: usize,
    deleted: u64,
}

/// Writes the entries from the first retained one through `through`, with the checkpoints
/// from the anchor before them through `through`, to `out`, checking the chain as it goes:
/// the entry at `through` must be the one its checkpoint signed. Answers (first entry, entries,
/// checkpoints written).
async fn archive(
    client: &KeysafeClient,
    out: &mut (dyn Write + Send),
    key: &keysafe_proto::audit::AuditPublicKey,
    pk: &[u8],
    checkpoints: &[keysafe_proto::audit::AuditCheckpoint],
    through: u64,
) -> anyhow::Result<(u64, u64, usize)> {
    writeln!(out, "{}", serde_json::json!({ "public_key": key }))?;
    let covered: Vec<_> = checkpoints
        .iter()
        .filter(|c| c.seq <= through)
        .cloned()
        .collect();
    let mut verifier: Option<ChainVerifier> = None;
    let mut first = None;
    let mut entries = 0u64;
    let mut next = 1u64;
    'pages: loop {
        let page = client.audit_entries(next, None, PAGE).await?.entries;
        let Some(last) = page.last().map(|e| e.seq) else {
            break;
        };
        for e in &page {
            if e.seq > through {
                break 'pages;
            }
            let v = verifier.get_or_insert_with(|| {
                first = Some(e.seq);
                // The first retained entry's predecessor was pruned before (or is genesis).
                ChainVerifier::new(&covered, pk, Some(e.seq))
            });
            v.feed(e);
            writeln!(out, "{}", serde_json::json!({ "entry": e }))?;
            entries += 1;
        }
        if last < next || (page.len() as u32) < PAGE {
            break;
        }
        next = last.saturating_add(1);
    }
    let (Some(first), Some(v)) = (first, verifier) else {
        anyhow::bail!("no entry up to {through} is left on the server (pruned already?)");
    };
    let report = v.finish();
    if let Some(b) = report.broken {
        return Err(anyhow::Error::new(SecurityError(format!(
            "not pruning: the audit trail is broken at entry {} ({}): {}",
            b.seq, b.kind, b.detail
        ))));
    }
    if report.signed_up_to != Some(through) {
        anyhow::bail!("entry {through} is not covered by its checkpoint; not pruning");
    }
    let mut written = 0;
    for c in covered.iter().filter(|c| c.seq + 1 >= first) {
        writeln!(out, "{}", serde_json::json!({ "checkpoint": c }))?;
        written += 1;
    }
    out.flush()?;
    Ok((first, entries, written))
}

async fn prune(
    client: &KeysafeClient,
    through: Option<u64>,
    before: Option<String>,
    path: std::path::PathBuf,
    json: bool,
) -> anyhow::Result<()> {
    let key = client.audit_public_key().await?;
    let pk = hex::decode(&key.public_key).context("the server's audit key is not hex")?;
    let checkpoints = client.audit_checkpoints(0).await?.checkpoints;
    let through = match (through, before) {
        (Some(t), _) => {
            if !checkpoints.iter().any(|c| c.seq == t) {
                return Err(usage(format!(
                    "--through {t}: no signed checkpoint at that entry (prune only through a \
                     checkpoint; `audit export` lists them after the entries)"
                )));
            }
            t
        }
        (None, Some(b)) => {
            let b = parse_since(&b)?;
            let limit = keysafe_proto::Timestamp::parse_rfc3339(&b)
                .map_err(|_| usage("--before: not a time"))?
                .unix_millis();
            checkpoints
                .iter()
                .filter(|c| c.signed_at < limit)
                .map(|c| c.seq)
                .max()
                .ok_or_else(|| {
                    usage(format!(
                        "--before {b}: no checkpoint was signed before then"
                    ))
                })?
        }
        (None, None) => return Err(usage("give --through SEQ or --before DATE")),
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let written = archive(client, &mut out, &key, &pk, &checkpoints, through).await;
    let (first, entries, n_checkpoints) = match written {
        Ok(w) => w,
        Err(e) => {
            drop(out);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    drop(file);
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        keysafe_core::fs::sync_dir(dir)?;
    }
    let archive_sha256 = hex::encode(
        keysafe_volume::procinfo::sha256_file(&path)
            .with_context(|| format!("cannot read {} back", path.display()))?,
    );
    // The archive is whole and on disk; only now are the entries deleted.
    let done = client
        .audit_prune(&keysafe_proto::audit::AuditPruneRequest {
            through,
            archive_sha256: archive_sha256.clone(),
        })
        .await?;
    let report = PruneReport {
        archive: path,
        archive_sha256,
        first,
        through,
        entries,
        checkpoints: n_checkpoints,
        deleted: done.deleted,
    };
    if json {
        return output::json(&report);
    }
    println!(
        "Archived entries {first}..{through} ({entries} entries, {} checkpoints) to {} \
         (SHA-256 {}).",
        report.checkpoints,
        report.archive.display(),
        report.archive_sha256
    );
    println!(
        "Deleted {} entries from the server; `keysafe admin audit verify` now starts from the \
         signed checkpoint at entry {through}.",
        report.deleted
    );
    Ok(())
}

pub async fn run(client: &KeysafeClient, cmd: AuditCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Prune {
            through,
            before,
            archive,
        } => prune(client, through, before, archive, json).await,
        AuditCommand::Verify { from, public_key } => {
            let pk = match public_key {
                Some(h) => hex::decode(h.trim())
                    .map_err(|_| usage("--public-key: expected the key in hex (64 digits)"))?,
                None => {
                    let k = client.audit_public_key().await?;
                    hex::decode(&k.public_key).context("the server's audit key is not hex")?
                }
            };
            // Checkpoints first (few), then the entries streamed page by page.
            let checkpoints = client
                .audit_checkpoints(from.unwrap_or(1))
                .await?
                .checkpoints;
            let mut verifier = ChainVerifier::new(&checkpoints, &pk, from);
            let mut next = from.unwrap_or(1).max(1);
            let spinner = Progress::spinner("verifying the audit trail");
            let mut seen = 0u64;
            loop {
                let page = client.audit_entries(next, None, PAGE).await?.entries;
                let Some(last) = page.last().map(|e| e.seq) else {
                    break;
                };
                for e in &page {
                    verifier.feed(e);
                }
                seen += page.len() as u64;
                spinner.set_message(&format!(
                    "verifying the audit trail: {seen} entries, up to {last}"
                ));
                // A page that does not move forward (a tampered seq column) ends the walk.
                if last < next || (page.len() as u32) < PAGE {
                    break;
                }
                next = last.saturating_add(1);
            }
            spinner.clear();
            let report = verifier.finish();
            if json {
                output::json(&report)?;
            } else if report.broken.is_none() {
                match (report.first_seq, report.last_seq) {
                    (Some(a), Some(b)) => println!(
                        "Audit trail verified: entries {a}..{b} ({} entries), {} checkpoints.",
                        report.entries, report.checkpoints
                    ),
                    _ => println!("Audit trail verified: no entries."),
                }
                if let Some(p) = report.pruned_through {
                    println!(
                        "Entries 1..{p} were pruned (archived, then deleted, as the trail \
                         records); verified from the signed checkpoint at entry {p}."
                    );
                }
                match report.signed_up_to {
                    Some(s) if Some(s) == report.last_seq => {
                        println!("Signed up to the last entry ({s}).")
                    }
                    Some(s) => println!(
                        "Signed up to entry {s}; later entries are chained but not yet signed \
                         (a checkpoint is signed every audit.checkpoint_interval)."
                    ),
                    None => println!("No signed checkpoint covers these entries yet."),
                }
            }
            if let Some(b) = report.broken {
                return Err(anyhow::Error::new(SecurityError(format!(
                    "audit trail broken at entry {} ({}): {}",
                    b.seq, b.kind, b.detail
                ))));
            }
            Ok(())
        }
        AuditCommand::Export { since, output } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let key = client.audit_public_key().await?;
            // From the first entry at or after `since` (the first entry of all without it),
            // every later entry: times are arrival times and a slow request may commit after a
            // later one, so filtering each entry by time would leave gaps in the chain.
            let start = match &since {
                Some(since) => client
                    .audit_entries(1, Some(since), 1)
                    .await?
                    .entries
                    .first()
                    .map(|e| e.seq),
                None => Some(1),
            };
            let mut out: Box<dyn Write + Send> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            // Page by page, straight to the output: an export of everything never holds the
            // whole trail in memory.
            let written = export(client, &mut out, &key, start).await;
            let (entries, checkpoints) = match written {
                Ok(n) => n,
                Err(e) => {
                    drop(out);
                    // A partial export would pass for a shorter trail: leave none behind (only
                    // a regular file is removed, never a device such as /dev/null).
                    if let Some(p) = &output
                        && std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
                    {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(e);
                }
            };
            if output.is_some() && !json {
                eprintln!("Exported {entries} entries and {checkpoints} checkpoints.");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_takes_a_date_or_an_rfc3339_time() {
        assert_eq!(parse_since("2026-12-01").unwrap(), "2026-12-01T00:00:00Z");
        assert_eq!(
            parse_since("2026-12-01T08:30:00Z").unwrap(),
            "2026-12-01T08:30:00Z"
        );
        for bad in [
            "2026-13-01",
            "2026-12-32",
            "yesterday",
            "2026-1-01",
            "",
            "20261201",
        ] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
