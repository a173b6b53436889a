//! Which request a log line belongs to. Every line a request's task logs names the request id,
//! the caller's short fingerprint and its address, as a `request{id=… client=… remote=…}`
//! prefix (in JSON, a `span` object). The context is a task-local value set around the request,
//! not a tracing span: a span costs a registry slot and the formatting of its fields on every
//! request, logged or not (about half a microsecond, a tenth of the cheapest route's work here),
//! while this costs nothing until a line is written. The log's formatter (keysafe-cli's
//! `logging`) reads it through [`with_current`]. Like a span that is not passed on explicitly,
//! it does not follow work the request hands to another task or thread.

use crate::identity::PeerIdentity;
use std::future::Future;

tokio::task_local! {
    static CURRENT: RequestLog;
}

/// What every log line of one request names.
#[derive(Debug, Clone)]
pub struct RequestLog {
    id: String,
    peer: Option<PeerIdentity>,
}

impl RequestLog {
    pub(crate) fn new(id: String, peer: Option<PeerIdentity>) -> Self {
        Self { id, peer }
    }

    /// The request id (letters, digits, `-` and `_`: see the middleware).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The first sixteen hex digits of the caller's certificate fingerprint, or `-`.
    pub fn client(&self) -> &str {
        self.peer
            .as_ref()
            .and_then(|p| p.fingerprint.as_ref())
            .map_or("-", |f| f.short())
    }

    /// The caller's address, `IP:port` (empty when unknown).
    pub fn remote(&self) -> &str {
        self.peer.as_ref().map_or("", |p| &*p.remote_text)
    }

    /// Runs `f` (one request) with this as its log context.
    pub(crate) async fn scope<F: Future>(self, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }
}

/// Calls `f` with the log context of the request the current task serves; `None` outside one.
pub fn with_current<R>(f: impl FnOnce(&RequestLog) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}
