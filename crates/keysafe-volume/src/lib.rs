//! keysafe volumes: encrypted directories in gocryptfs's open on-disk format, served in the
//! clear through FUSE while their password stays in keysafe; process access rules on the clear
//! view; and LUKS2 disks bound to keys deposited in keysafe. Depends on the client library
//! (deposits are end-to-end encrypted like every other), never on the server.

pub mod format;
pub mod fs;
pub mod keys;
pub mod luks;
pub mod manage;
pub mod mounts;
pub mod procinfo;
pub mod rules;
pub mod table;

use keysafe_client::ClientError;

/// What can go wrong with a volume or disk operation.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    Format(#[from] format::FormatError),
    /// keysafe refused or could not be reached.
    #[error("keysafe: {0}")]
    Client(#[from] ClientError),
    /// Bad input (a name, a path, an argument).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Exists already, or is in the wrong state.
    #[error("{0}")]
    Conflict(String),
    /// The rules file does not verify (edited outside keysafe, or another volume's).
    #[error("{0}")]
    Tampered(String),
    /// Part of the operation was done; the message says what is left to do.
    #[error("{0}")]
    Incomplete(String),
    /// An external tool (cryptsetup, fusermount3) failed.
    #[error("{0}")]
    Tool(String),
    #[error("{0}")]
    Io(String),
}
