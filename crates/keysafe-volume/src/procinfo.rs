//! Who is calling: the executable of a process (`/proc/PID/exe`), the SHA-256 of that very file
//! (read through `/proc/PID/exe`, so renaming or replacing the path on disk does not change what
//! is hashed), and for interpreters the script it runs (its first argument, from
//! `/proc/PID/cmdline`, resolved against `/proc/PID/cwd`). Hashes are cached by the file's
//! (device, inode, size, modification time), so a binary is read once, not on every open.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Cached hashes are dropped wholesale past this many (a bound, not an LRU: rarely reached).
const MAX_CACHED: usize = 4096;

type FileKey = (u64, u64, u64, i64, i64);

#[derive(Debug, Default)]
pub struct HashCache {
    map: Mutex<HashMap<FileKey, [u8; 32]>>,
}

/// A process as far as the rules care.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub pid: u32,
    /// The executable's path, if the process still exists and it can be read.
    pub exe: Option<PathBuf>,
    /// argv[1] made absolute (for interpreters), when it does not look like an option.
    pub script: Option<PathBuf>,
}

impl Caller {
    pub fn of(pid: u32) -> Self {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let exe = std::fs::read_link(proc.join("exe")).ok();
        let script = std::fs::read(proc.join("cmdline")).ok().and_then(|c| {
            let arg = c.split(|&b| b == 0).nth(1)?;
            if arg.is_empty() || arg.starts_with(b"-") {
                return None;
            }
            let p = Path::new(OsStr::from_bytes(arg));
            let abs = if p.is_absolute() {
                p.to_owned()
            } else {
                std::fs::read_link(proc.join("cwd")).ok()?.join(p)
            };
            Some(normalize(&abs))
        });
        Self { pid, exe, script }
    }

    /// A short description for logs: `pid 123 (/usr/bin/python3 /opt/job.py)`.
    pub fn describe(&self) -> String {
        let exe = self
            .exe
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "unknown executable".into());
        match &self.script {
            Some(s) => format!("pid {} ({exe} {})", self.pid, s.display()),
            None => format!("pid {} ({exe})", self.pid),
        }
    }
}

/// Lexically removes `.` and `..` (the path is then compared, not opened).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn sha256_reader(mut r: impl Read) -> std::io::Result<[u8; 32]> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// SHA-256 of a file on disk (for `--sha256 auto` when adding a rule).
pub fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    sha256_reader(std::fs::File::open(path)?)
}

impl HashCache {
    /// SHA-256 of the executable process `pid` runs, read through `/proc/PID/exe`.
    pub fn exe_sha256(&self, pid: u32) -> Option<[u8; 32]> {
        let f = std::fs::File::open(format!("/proc/{pid}/exe")).ok()?;
        let m = f.metadata().ok()?;
        let key = (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec());
        if let Some(h) = self.map.lock().ok()?.get(&key) {
            return Some(*h);
        }
        let h = sha256_reader(f).ok()?;
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= MAX_CACHED {
                map.clear();
            }
            map.insert(key, h);
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_this_process() {
        let me = Caller::of(std::process::id());
        assert_eq!(me.exe, Some(std::env::current_exe().unwrap()));
        let cache = HashCache::default();
        let h = cache.exe_sha256(std::process::id()).unwrap();
        assert_eq!(h, sha256_file(&std::env::current_exe().unwrap()).unwrap());
        assert_eq!(cache.exe_sha256(std::process::id()).unwrap(), h);
        assert!(Caller::of(u32::MAX).exe.is_none());
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), Path::new("/a/c"));
    }
}
