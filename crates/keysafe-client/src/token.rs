//! The client's side of sequenced tokens (clone detection, see the server's `tokens` module).
//!
//! The current token lives in the home (`token`, mode 0600). Every authenticated request carries
//! it in `x-keysafe-token`; when an answer carries a new one, it replaces the stored token if its
//! counter is higher (answers can arrive out of order). Several processes may share one home: the
//! file is updated under an exclusive lock with a write-to-temporary-and-rename, and a process
//! re-reads it when it changed on disk (a new inode), so they all follow one sequence.

use crate::error::ClientError;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// What identifies one version of the token file: it is replaced by rename, so the inode changes
/// with every write even when the modification time (coarse on some file systems) does not.
type Stamp = (u64, Option<SystemTime>);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = m.len();
    Some((ino, m.modified().ok()))
}
use zeroize::Zeroizing;

/// The file in a client home holding the current sequenced token.
pub const TOKEN_FILE: &str = "token";
const LOCK_FILE: &str = "token.lock";

fn counter_of(token: &str) -> Option<u64> {
    token.split_once('.').and_then(|(c, _)| c.parse().ok())
}

#[derive(Default)]
struct State {
    token: Option<Zeroizing<String>>,
    counter: Option<u64>,
    stamp: Option<Stamp>,
}

/// Holds a client's token in memory and, for clients made from a home, on disk.
pub struct TokenKeeper {
    dir: Option<PathBuf>,
    state: Mutex<State>,
}

impl std::fmt::Debug for TokenKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeeper")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl TokenKeeper {
    /// A keeper without a file (tests, one-off clients): the token lives as long as the client.
    pub fn in_memory() -> Self {
        Self {
            dir: None,
            state: Mutex::new(State::default()),
        }
    }

    /// A keeper backed by `dir/token`.
    pub fn in_home(dir: &Path) -> Self {
        let k = Self {
            dir: Some(dir.to_owned()),
            state: Mutex::new(State::default()),
        };
        k.reload_if_changed();
        k
    }

    fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(TOKEN_FILE))
    }

    fn reload_if_changed(&self) {
        let Some(path) = self.path() else { return };
        let current = stamp(&path);
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if current.is_none() || current == st.stamp {
            return;
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            let text = Zeroizing::new(text);
            let t = text.trim();
            if let Some(c) = counter_of(t)
                && st.counter.is_none_or(|have| c >= have)
            {
                st.token = Some(Zeroizing::new(t.to_owned()));
                st.counter = Some(c);
            }
        }
        st.stamp = current;
    }

    /// The token to send, if any.
    pub fn current(&self) -> Option<Zeroizing<String>> {
        self.reload_if_changed();
        self.state.lock().ok().and_then(|s| s.token.clone())
    }

    /// The counter of the token held, if any.
    pub fn counter(&self) -> Option<u64> {
        self.reload_if_changed();
        self.state.lock().ok().and_then(|s| s.counter)
    }

    /// Takes a token the server issued, if it is newer than the one held.
    pub fn offer(&self, token: &str) -> Result<(), ClientError> {
        let Some(counter) = counter_of(token) else {
            return Ok(());
        };
        {
            let Ok(mut st) = self.state.lock() else {
                return Ok(());
            };
            if st.counter.is_some_and(|have| have >= counter) {
                return Ok(());
            }
            st.token = Some(Zeroizing::new(token.to_owned()));
            st.counter = Some(counter);
        }
        if let Some(dir) = &self.dir {
            persist(dir, token, counter)?;
            // The file may hold a newer token another process stored: read it back.
            if let Ok(mut st) = self.state.lock() {
                st.stamp = None;
            }
            self.reload_if_changed();
        }
        Ok(())
    }
}

/// Writes `dir/token` under an exclusive lock, unless the file already holds a newer token.
fn persist(dir: &Path, token: &str, counter: u64) -> Result<(), ClientError> {
    let err = |what: &str, e: std::io::Error| {
        ClientError::Home(format!(
            "cannot {what} the token file in {}: {e}",
            dir.display()
        ))
    };
    let mut lo = std::fs::OpenOptions::new();
    lo.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        lo.mode(0o600);
    }
    let lock = lo.open(dir.join(LOCK_FILE)).map_err(|e| err("lock", e))?;
    lock.lock().map_err(|e| err("lock", e))?;
    let path = dir.join(TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && counter_of(Zeroizing::new(text).trim()).is_some_and(|have| have >= counter)
    {
        return Ok(());
    }
    // The lock is released when `lock` is dropped, after the rename.
    crate::home::replace_private_file(&path, &[token.as_bytes(), b"\n"])
        .map_err(|e| err("replace", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_token_across_keepers() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenKeeper::in_home(dir.path());
        let b = TokenKeeper::in_home(dir.path());
        assert!(a.current().is_none());
        a.offer("3.aaa").unwrap();
        b.offer("2.bbb").unwrap(); // older: ignored on disk
        assert_eq!(b.current().unwrap().as_str(), "3.aaa");
        b.offer("4.ccc").unwrap();
        assert_eq!(a.current().unwrap().as_str(), "4.ccc");
        a.offer("not-a-token").unwrap();
        assert_eq!(a.counter(), Some(4));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
    }
}
