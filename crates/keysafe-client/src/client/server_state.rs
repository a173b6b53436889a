//! Recent server failures kept between processes: written to [`SERVER_STATE_FILE`] in the
//! client home when a server's health changes, read back when a client is built from that home.
//! Best effort: a file that cannot be read or written only costs a retry.

use super::{Endpoint, KeysafeClient};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The file in a client home that remembers recent server failures, so that the next process
/// (every CLI command is one) starts with the server that answered instead of one that just
/// failed. Only URLs and times; mode 0600.
pub const SERVER_STATE_FILE: &str = "server-state.json";

#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct PersistedState {
    /// URL -> when it last failed, in milliseconds since the Unix epoch.
    failed_at: BTreeMap<String, u64>,
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl KeysafeClient {
    /// Best effort: a failure to write only costs the next process a retry.
    pub(super) fn save_state(&self, path: &std::path::Path) {
        let now_ms = unix_millis();
        let mut state = PersistedState::default();
        for ep in &self.inner.endpoints {
            if let Some(t) = ep.health.lock().ok().and_then(|h| h.failed_at) {
                let ago = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
                state
                    .failed_at
                    .insert(ep.base.clone(), now_ms.saturating_sub(ago));
            }
        }
        let Ok(text) = serde_json::to_vec(&state) else {
            return;
        };
        if let Err(e) = crate::home::replace_private_file(path, &[&text]) {
            tracing::debug!(error = %e, path = %path.display(), "cannot save server state");
        }
    }
}

/// Marks servers that failed less than `reprobe_after` ago (according to the state file) as down.
pub(super) fn restore_state(
    path: &std::path::Path,
    endpoints: &[Endpoint],
    reprobe_after: Duration,
) {
    let Ok(bytes) = std::fs::read(path) else {
        return;
    };
    let Ok(state) = serde_json::from_slice::<PersistedState>(&bytes) else {
        return;
    };
    let now_ms = unix_millis();
    for ep in endpoints {
        let Some(&t) = state.failed_at.get(&ep.base) else {
            continue;
        };
        // A time in the future (clock change) counts as just now.
        let ago = Duration::from_millis(now_ms.saturating_sub(t));
        if ago < reprobe_after
            && let Some(at) = Instant::now().checked_sub(ago)
            && let Ok(mut h) = ep.health.lock()
        {
            h.failed_at = Some(at);
        }
    }
}
