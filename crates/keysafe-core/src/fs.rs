//! Durable files for the server side: keys and configuration written so that a crash (kill -9,
//! power loss) leaves either the old file or the complete new one, never a torn one, and never
//! a file whose directory entry is lost; and the data directory's lock. Imports nothing of its
//! siblings.
//!
//! A file is durable only when its contents are synced *and* the directory that names it is
//! synced after it was created or renamed there: on ext4, XFS and others the entry lives in
//! the directory's own blocks. Every function here does both.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Syncs a directory, so that entries created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory that holds `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn options(mode: u32) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    o
}

/// Creates `path` with `contents` (mode `mode` from the start; never overwrites), synced, and
/// syncs its directory. A file left half-written by a crash is possible only before this
/// returns, and is then removed where the error is reported.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = options(mode).open(path)?;
    let written = f.write_all(contents).and_then(|()| f.sync_all());
    if let Err(e) = written {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    sync_dir(parent_of(path))
}

/// Replaces `path` atomically with `contents`: a temporary file in the same directory
/// (mode `mode`), synced, renamed over `path`, and the directory synced. A crash leaves the
/// old file or the new one (and at worst a stray temporary file, never read).
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tag = [0u8; 8];
    crate::crypto::random_bytes(&mut tag).map_err(|_| std::io::Error::other("no randomness"))?;
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", hex::encode(tag)));
    let result = options(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(parent_of(path))
}

/// Renames `from` to `to` (same file system) and syncs the directories of both.
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    sync_dir(parent_of(to))?;
    if parent_of(from) != parent_of(to) {
        sync_dir(parent_of(from))?;
    }
    Ok(())
}

/// Removes a file, if it exists, and syncs its directory.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(parent_of(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Syncs every file and directory under `dir` (deepest first) and then `dir` itself: for a
/// tree built in a staging directory before it is renamed into place.
/// An entry that vanishes meanwhile (a database's journal removed as it closes) needs no sync.
pub fn sync_tree(dir: &Path) -> std::io::Result<()> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = match entry.file_type() {
            Ok(k) => k,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        let synced = if kind.is_dir() {
            sync_tree(&entry.path())
        } else if kind.is_file() {
            File::open(entry.path()).and_then(|f| f.sync_all())
        } else {
            Ok(())
        };
        match synced {
            Err(e) if !gone(&e) => return Err(e),
            _ => {}
        }
    }
    sync_dir(dir)
}

/// Creates `dir` (and its parents), makes it 0700, and syncs the directory that holds it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    sync_dir(parent_of(dir))
}

/// The name of the lock file in a data directory.
pub const LOCK_FILE: &str = "keysafe.lock";

/// A lock on a data directory: an advisory `flock` on `DIR/keysafe.lock`. Every `keysafe
/// serve` holds it shared for as long as it runs (several servers on one directory are
/// allowed); an offline command that changes what servers rely on (a seal migration) holds it
/// exclusively, so it never runs beside a server or beside another such command. The kernel
/// releases it when the process ends, however it ends (kill -9 included): a crash never leaves
/// a stale lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

/// Why a data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Servers hold it (shared): an exclusive lock was asked for.
    #[error("{dir} is in use by a running keysafe server; stop every `keysafe serve` on it first")]
    Serving { dir: PathBuf },
    /// An offline command holds it exclusively.
    #[error("another keysafe command (a seal migration) is working on {dir}; wait for it to end")]
    Busy { dir: PathBuf },
    #[error("cannot lock {path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

impl DataDirLock {
    /// Takes the lock shared (a server), without waiting.
    pub fn shared(dir: &Path) -> Result<Self, LockError> {
        let (file, path) = open_lock_file(dir)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Busy {
                dir: dir.to_owned(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(LockError::Io {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Takes the lock exclusively (an offline command), without waiting.
    pub fn exclusive(dir: &Path) -> Result<Self, LockError> {
        let (file, path) = open_lock_file(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => {
                // Who holds it: servers (shared) let another shared lock through; an offline
                // command does not.
                let probe = open_lock_file(dir)?.0;
                Err(match probe.try_lock_shared() {
                    Ok(()) => LockError::Serving {
                        dir: dir.to_owned(),
                    },
                    Err(_) => LockError::Busy {
                        dir: dir.to_owned(),
                    },
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(LockError::Io {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_lock_file(dir: &Path) -> Result<(File, PathBuf), LockError> {
    let path = dir.join(LOCK_FILE);
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let file = o.open(&path).map_err(|e| LockError::Io {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keysafe-fs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn write_new_never_overwrites_and_replace_swaps_whole_files() {
        let dir = temp("write");
        let p = dir.join("f");
        write_new(&p, b"one", 0o600).unwrap();
        assert!(write_new(&p, b"two", 0o600).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        replace(&p, b"three", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        remove(&p).unwrap();
        remove(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn servers_share_the_lock_and_offline_commands_exclude_everyone() {
        let dir = temp("lock");
        let a = DataDirLock::shared(&dir).unwrap();
        let b = DataDirLock::shared(&dir).unwrap();
        assert!(matches!(
            DataDirLock::exclusive(&dir),
            Err(LockError::Serving { .. })
        ));
        drop((a, b));
        let x = DataDirLock::exclusive(&dir).unwrap();
        assert!(matches!(
            DataDirLock::exclusive(&dir),
            Err(LockError::Busy { .. })
        ));
        assert!(matches!(
            DataDirLock::shared(&dir),
            Err(LockError::Busy { .. })
        ));
        drop(x);
        DataDirLock::exclusive(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
