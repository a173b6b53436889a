//! Extended attributes, as gocryptfs stores them: the name encrypted like a file name under a
//! fixed IV and stored as `user.gocryptfs.<that>`, the value sealed like a symlink target.
//! POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`) pass through unencrypted
//! so the backing file system enforces them. `security.capability` is answered "none" without
//! touching the disk: the volume is mounted `nosuid`, and the kernel asks for it on every write.

use super::backing::{errno, proc_path};
use super::{Res, VolumeFs};
use fuser::Errno;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

const STORE_PREFIX: &str = "user.gocryptfs.";
const CAPABILITY: &[u8] = b"security.capability";

fn is_acl(name: &[u8]) -> bool {
    name == b"system.posix_acl_access" || name == b"system.posix_acl_default"
}

/// `size` of a value, then the value (the buffer may have to grow if it changed meanwhile).
fn read_value(path: &std::path::Path, name: &[u8]) -> Res<Vec<u8>> {
    let name = OsStr::from_bytes(name);
    for _ in 0..4 {
        let len = rustix::fs::lgetxattr_query(path, name).map_err(errno)?;
        let mut buf = vec![0u8; len];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
    Err(Errno::EIO)
}

impl VolumeFs {
    fn stored_xattr_name(&self, name: &[u8]) -> Res<Vec<u8>> {
        let enc = self
            .keys
            .names
            .encrypt_xattr_name(name)
            .map_err(|_| Errno::EINVAL)?;
        let mut out = STORE_PREFIX.as_bytes().to_vec();
        out.extend_from_slice(enc.as_bytes());
        Ok(out)
    }

    pub(super) fn get_xattr(&self, ino: u64, name: &OsStr) -> Res<Vec<u8>> {
        let name = name.as_bytes();
        if name == CAPABILITY {
            return Err(Errno::ENODATA);
        }
        let (dir, entry) = self.parent_and_entry(ino)?;
        let path = proc_path(&dir, &entry);
        if is_acl(name) {
            return read_value(&path, name);
        }
        let sealed = read_value(&path, &self.stored_xattr_name(name)?)?;
        if sealed.is_empty() {
            return Ok(Vec::new());
        }
        self.keys.content.open_value(&sealed).map_err(|e| {
            tracing::warn!(error = %e, "cannot decrypt an extended attribute");
            Errno::EIO
        })
    }

    pub(super) fn set_xattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Res<()> {
        let name = name.as_bytes();
        let (dir, entry) = self.parent_and_entry(ino)?;
        let path = proc_path(&dir, &entry);
        let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
        if is_acl(name) {
            return rustix::fs::lsetxattr(&path, OsStr::from_bytes(name), value, flags)
                .map_err(errno);
        }
        let stored = self.stored_xattr_name(name)?;
        let sealed = if value.is_empty() {
            Vec::new()
        } else {
            self.keys
                .content
                .seal_value(value)
                .map_err(|_| Errno::EIO)?
        };
        rustix::fs::lsetxattr(&path, OsStr::from_bytes(&stored), &sealed, flags).map_err(errno)
    }

    pub(super) fn list_xattr(&self, ino: u64) -> Res<Vec<u8>> {
        let (dir, entry) = self.parent_and_entry(ino)?;
        let path = proc_path(&dir, &entry);
        let mut raw = Vec::new();
        for _ in 0..4 {
            let len = rustix::fs::llistxattr_query(&path).map_err(errno)?;
            raw = vec![0u8; len];
            match rustix::fs::llistxattr(&path, &mut raw[..]) {
                Ok(n) => {
                    raw.truncate(n);
                    break;
                }
                Err(rustix::io::Errno::RANGE) => continue,
                Err(e) => return Err(errno(e)),
            }
        }
        let mut out = Vec::new();
        for n in raw.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if is_acl(n) {
                out.extend_from_slice(n);
                out.push(0);
            } else if let Some(enc) = n.strip_prefix(STORE_PREFIX.as_bytes()) {
                match self.keys.names.decrypt_xattr_name(enc) {
                    Ok(plain) if !is_acl(&plain) => {
                        out.extend_from_slice(&plain);
                        out.push(0);
                    }
                    _ => tracing::warn!(
                        "an extended attribute whose name does not decrypt is left out"
                    ),
                }
            }
        }
        Ok(out)
    }

    pub(super) fn remove_xattr(&self, ino: u64, name: &OsStr) -> Res<()> {
        let name = name.as_bytes();
        let (dir, entry) = self.parent_and_entry(ino)?;
        let path = proc_path(&dir, &entry);
        let stored = if is_acl(name) {
            name.to_vec()
        } else {
            self.stored_xattr_name(name)?
        };
        rustix::fs::lremovexattr(&path, OsStr::from_bytes(&stored)).map_err(errno)
    }
}
