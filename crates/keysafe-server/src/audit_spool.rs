//! The node's audit spool (docs/adr/0012-degraded-read-only-mode.md): while the database
//! accepts no writes (only a standby is reachable), the audit queue's batches are appended to
//! `DIR/audit-spool.jsonl` and fsynced instead of being lost or refusing every read; when a
//! primary answers again they are appended to the chain, oldest first and before anything
//! this node records afterwards, each batch once (its id is recorded in the database in the
//! same transaction, `ClusterStore::append_spooled`), and the file is removed.
//!
//! One JSON line per batch: `{"id":"NODE/RANDOM","prev":"HASH","events":[...]}`, where `prev`
//! is the SHA-256 of the previous line (of the empty string for the first), so lines removed,
//! reordered or edited in the middle are noticed when the spool is read. A torn last line (a
//! crash while it was written, before it was synced and so before the batch counted as
//! spooled) is left out. The file is 0600 in the 0700 data directory; it holds what audit
//! entries hold (names, fingerprints, addresses), never a secret.

use keysafe_core::store::SpoolBatch;
use keysafe_proto::audit::AuditEvent;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The spool's file name in the data directory.
pub const SPOOL_FILE: &str = "audit-spool.jsonl";

#[derive(Serialize, Deserialize)]
struct Line {
    id: String,
    prev: String,
    events: Vec<AuditEvent>,
}

/// Why the spool could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot use the audit spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line in the middle does not chain to the one before it (edited, removed, reordered).
    #[error("the audit spool {path} was altered at line {line}: it is kept for inspection")]
    Altered { path: PathBuf, line: usize },
}

#[derive(Debug)]
pub struct AuditSpool {
    path: PathBuf,
    node: String,
    /// Serialises writers of the file; holds the hash of its last line.
    last: Mutex<Option<String>>,
    /// Entries in the spool (0: the file is absent or empty).
    entries: AtomicU64,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

impl AuditSpool {
    /// The spool at `path`, for entries of node `node` (part of every batch id). Counts what a
    /// previous run left in it.
    pub fn open(path: PathBuf, node: &str) -> Result<Self, SpoolError> {
        let spool = Self {
            path,
            node: node.to_owned(),
            last: Mutex::new(None),
            entries: AtomicU64::new(0),
        };
        let (batches, last) = spool.read()?;
        let n: usize = batches.iter().map(|b| b.events.len()).sum();
        spool.entries.store(n as u64, Ordering::Relaxed);
        *spool.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
        if n > 0 {
            tracing::warn!(
                entries = n,
                path = %spool.path.display(),
                "audit entries spooled by an earlier run wait to be appended to the chain"
            );
        }
        Ok(spool)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries waiting in the spool.
    pub fn len(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn io(&self, source: std::io::Error) -> SpoolError {
        SpoolError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one batch and syncs it (and, when the file is new, its directory). When this
    /// returns `Ok` the batch survives a crash.
    pub fn write(&self, events: &[AuditEvent]) -> Result<(), SpoolError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let mut random = [0u8; 12];
        keysafe_core::crypto::random_bytes(&mut random)
            .map_err(|_| self.io(std::io::Error::other("no randomness for a batch id")))?;
        let line = Line {
            id: format!("{}/{}", self.node, hex::encode(random)),
            prev: last.clone().unwrap_or_else(|| sha256_hex(b"")),
            events: events.to_vec(),
        };
        let mut text = serde_json::to_vec(&line).map_err(|e| self.io(std::io::Error::other(e)))?;
        text.push(b'\n');
        let created = !self.path.exists();
        let mut o = std::fs::OpenOptions::new();
        o.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(&self.path).map_err(|e| self.io(e))?;
        f.write_all(&text)
            .and_then(|()| f.sync_data())
            .map_err(|e| self.io(e))?;
        if created && let Some(dir) = self.path.parent() {
            keysafe_core::fs::sync_dir(dir).map_err(|e| self.io(e))?;
        }
        *last = Some(sha256_hex(&text[..text.len() - 1]));
        self.entries
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        metrics::gauge!("keysafe_audit_spooled_entries").set(self.len() as f64);
        Ok(())
    }

    /// Every complete batch, oldest first, and the hash of the last line.
    fn read(&self) -> Result<(Vec<SpoolBatch>, Option<String>), SpoolError> {
        let f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
            Err(e) => return Err(self.io(e)),
        };
        let mut out = Vec::new();
        let mut prev = sha256_hex(b"");
        let mut last = None;
        let lines: Vec<String> = std::io::BufReader::new(f)
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| self.io(e))?;
        let n = lines.len();
        for (i, text) in lines.into_iter().enumerate() {
            let parsed: Option<Line> = serde_json::from_str(&text).ok();
            match parsed {
                Some(l) if l.prev == prev => {
                    prev = sha256_hex(text.as_bytes());
                    last = Some(prev.clone());
                    out.push(SpoolBatch {
                        id: l.id,
                        events: l.events,
                    });
                }
                // The last line, torn by a crash before it was synced: never counted as
                // spooled, so nothing acknowledged is lost by leaving it out.
                None if i + 1 == n => {
                    tracing::warn!(path = %self.path.display(), "the audit spool ends with a torn line (a crash while spooling); it is left out");
                }
                _ => {
                    return Err(SpoolError::Altered {
                        path: self.path.clone(),
                        line: i + 1,
                    });
                }
            }
        }
        Ok((out, last))
    }

    /// Every spooled batch, oldest first.
    pub fn batches(&self) -> Result<Vec<SpoolBatch>, SpoolError> {
        let _guard = self.last.lock().unwrap_or_else(|p| p.into_inner());
        self.read().map(|(b, _)| b)
    }

    /// Moves an altered spool aside (`audit-spool.jsonl.altered-MILLIS`, kept for inspection)
    /// so that recording goes on; the caller reports it loudly.
    pub fn quarantine(&self) -> Result<PathBuf, SpoolError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let mut aside = self.path.clone().into_os_string();
        aside.push(format!(
            ".altered-{}",
            keysafe_proto::Timestamp::now().unix_millis()
        ));
        let aside = PathBuf::from(aside);
        keysafe_core::fs::rename(&self.path, &aside).map_err(|e| self.io(e))?;
        *last = None;
        self.entries.store(0, Ordering::Relaxed);
        metrics::gauge!("keysafe_audit_spooled_entries").set(0.0);
        Ok(aside)
    }

    /// Removes the spool once every batch read by [`AuditSpool::batches`] is in the chain. A
    /// batch written since is kept (it is read again and replayed next time).
    pub fn clear(&self, replayed: usize) -> Result<(), SpoolError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (now, _) = self.read()?;
        if now.len() > replayed {
            // Written meanwhile: keep them all; the replayed ones are skipped by their ids.
            return Ok(());
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(e)),
        }
        if let Some(dir) = self.path.parent() {
            keysafe_core::fs::sync_dir(dir).map_err(|e| self.io(e))?;
        }
        *last = None;
        self.entries.store(0, Ordering::Relaxed);
        metrics::gauge!("keysafe_audit_spooled_entries").set(0.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> AuditEvent {
        AuditEvent {
            time: n as i64,
            node: "n1".into(),
            request_id: format!("r{n}"),
            remote: "127.0.0.1:1".into(),
            client: None,
            org: None,
            operation: "GET /v1/health".into(),
            target: "/v1/health".into(),
            version: None,
            outcome: "ok".into(),
        }
    }

    #[test]
    fn batches_come_back_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SPOOL_FILE);
        let s = AuditSpool::open(path.clone(), "n1").unwrap();
        assert!(s.is_empty());
        s.write(&[ev(1), ev(2)]).unwrap();
        s.write(&[ev(3)]).unwrap();
        assert_eq!(s.len(), 3);
        let again = AuditSpool::open(path.clone(), "n1").unwrap();
        assert_eq!(again.len(), 3);
        let b = again.batches().unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].events, vec![ev(1), ev(2)]);
        assert_eq!(b[1].events, vec![ev(3)]);
        assert!(b[0].id.starts_with("n1/") && b[0].id != b[1].id);
        // Writing after reopening keeps the chain of lines.
        again.write(&[ev(4)]).unwrap();
        assert_eq!(again.batches().unwrap().len(), 3);
        again.clear(3).unwrap();
        assert!(again.is_empty() && !path.exists());
        #[cfg(unix)]
        {
            again.write(&[ev(5)]).unwrap();
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn a_torn_last_line_is_left_out_and_an_altered_middle_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SPOOL_FILE);
        let s = AuditSpool::open(path.clone(), "n1").unwrap();
        s.write(&[ev(1)]).unwrap();
        s.write(&[ev(2)]).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"id\":\"n1/x\",\"prev\":\"ab");
        std::fs::write(&path, &text).unwrap();
        let s = AuditSpool::open(path.clone(), "n1").unwrap();
        assert_eq!(s.len(), 2);
        // A line removed from the middle breaks the chain of lines.
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n", lines[1])).unwrap();
        assert!(matches!(
            AuditSpool::open(path.clone(), "n1"),
            Err(SpoolError::Altered { line: 1, .. })
        ));
        // An edited event too.
        std::fs::write(&path, text.replace("r1", "r9")).unwrap();
        assert!(matches!(
            AuditSpool::open(path, "n1"),
            Err(SpoolError::Altered { .. })
        ));
    }
}
