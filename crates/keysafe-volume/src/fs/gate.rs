//! The hook through which process access rules see the clear view: before an operation on a
//! path inside the volume, the file system asks the gate whether the calling process (the pid
//! the kernel sends with every FUSE request) may do it. The rules engine (`crate::rules`)
//! implements it; [`OpenGate`] allows everything.

use fuser::Errno;
use std::path::Path;

/// What the caller is about to do (for the decision log; rules allow or deny a path as a whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Open for reading, read a symlink or an extended attribute.
    Read,
    /// Open for writing, truncate, change attributes or extended attributes.
    Write,
    /// Create a file, directory, node, symlink or hard link.
    Create,
    /// List a directory.
    List,
    /// Remove or rename.
    Remove,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Create => "create",
            Access::List => "list",
            Access::Remove => "remove",
        }
    }
}

pub trait AccessGate: Send + Sync + 'static {
    /// Whether any path is guarded at all; when not, paths are never even computed.
    fn guards(&self) -> bool;
    /// `Ok` to let process `pid` do `access` on `path` (absolute inside the volume, starting
    /// with '/'), or the error to answer (`EACCES`).
    fn check(&self, pid: u32, access: Access, path: &Path) -> Result<(), Errno>;
}

/// No rules: every process that the kernel lets through may use the volume.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenGate;

impl AccessGate for OpenGate {
    fn guards(&self) -> bool {
        false
    }

    fn check(&self, _pid: u32, _access: Access, _path: &Path) -> Result<(), Errno> {
        Ok(())
    }
}
