//! Client-side errors. API errors keep the server's stable code, so callers (and the CLI's exit
//! codes) decide by code, never by message.

use keysafe_proto::{ClientFingerprint, ErrorCode};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a JSON error.
    #[error("{message} ({code}, HTTP {status}{})", .request_id.as_ref().map(|r| format!(", request {r}")).unwrap_or_default())]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        request_id: Option<String>,
    },
    /// The server answered something that is not keysafe's API.
    #[error("unexpected answer from the server (HTTP {status}): {detail}")]
    Unexpected { status: u16, detail: String },
    /// The server presented a different key than the one pinned.
    #[error(
        "the server's fingerprint {actual} does not match the pinned {expected}: refusing to talk to it \
         (if the server was legitimately re-keyed, re-register or fix server_fingerprint in client.toml)"
    )]
    FingerprintMismatch {
        expected: ClientFingerprint,
        actual: ClientFingerprint,
    },
    /// No connection could be made or it broke (refused, timed out, TLS failure).
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The client's private key file is readable by others.
    #[error("the key file {path} is readable by group or others (mode {mode:o}); run: chmod 600 {path}", path = .path.display())]
    InsecureKeyFile { path: PathBuf, mode: u32 },
    /// Something is wrong with the client home (missing, unreadable, malformed).
    #[error("{0}")]
    Home(String),
    #[error("{0}")]
    Invalid(String),
    /// An age payload could not be decrypted with this client's (or its groups') identities.
    #[error(
        "cannot decrypt the payload with this client's keys ({0}); if it was shared with one \
         of your groups, a member may need to admit you (keysafe group admit)"
    )]
    Decrypt(String),
    /// With several servers configured: the request failed on every server tried (each named
    /// with its last failure). `last` is the final failure, which decides the exit code.
    /// `not_retried`: it stopped early because the request may have reached a server and is not
    /// safe to repeat.
    #[error("{}{}", if *.not_retried { "" } else { "no server could answer: " }, .tried.join("; ") + if *.not_retried { " (not retried on another server: the request may have been applied)" } else { "" })]
    AllServersFailed {
        tried: Vec<String>,
        last: Box<ClientError>,
        not_retried: bool,
    },
    /// No server could answer, and the cached copy is older than `max_stale` allows. `cause`
    /// (the servers' failure) decides the exit code.
    #[error(
        "{cause}; the cached copy is not served: a server last confirmed it {} ago, past the cache's max_stale ({})",
        humantime::format_duration(std::time::Duration::from_secs(.age.as_secs())),
        humantime::format_duration(*.max_stale)
    )]
    CacheTooOld {
        age: std::time::Duration,
        max_stale: std::time::Duration,
        cause: Box<ClientError>,
    },
}

impl ClientError {
    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self.last() {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The failure that ended the request: itself, or for [`ClientError::AllServersFailed`] the
    /// last server's failure.
    pub fn last(&self) -> &ClientError {
        match self {
            ClientError::AllServersFailed { last, .. } => last.last(),
            ClientError::CacheTooOld { cause, .. } => cause.last(),
            other => other,
        }
    }
}
