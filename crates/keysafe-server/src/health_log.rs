//! Health status changes, logged once per change: probes arrive every few seconds, and a node
//! that stays sealed (or without its database) for hours must not log a warning per probe.

use std::collections::BTreeMap;

/// Marks an answer whose state is logged when it changes, so the request log keeps it at debug.
#[derive(Debug, Clone, Copy)]
pub struct LoggedOnChange;

/// The last status health reported, to log changes only.
#[derive(Debug, Default)]
pub struct HealthLog {
    last: std::sync::Mutex<String>,
}

impl HealthLog {
    /// Logs `status` if it differs from the previous probe's: `warn` when the node becomes
    /// unready, `info` when it is ready again. Returns whether it logged.
    pub fn observe(&self, status: &str, checks: &BTreeMap<String, String>) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if *last == status {
            return false;
        }
        let was = std::mem::replace(&mut *last, status.to_owned());
        let was = if was.is_empty() {
            "unknown"
        } else {
            was.as_str()
        };
        let checks = format!("{checks:?}");
        if status == "ok" {
            tracing::info!(was, %checks, "health: ready");
        } else {
            tracing::warn!(status, was, %checks, "health: not ready (logged once per change; probes log at debug)");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_logged_when_it_changes_not_per_probe() {
        let log = HealthLog::default();
        let checks = BTreeMap::new();
        assert!(log.observe("ok", &checks));
        assert!(!log.observe("ok", &checks));
        assert!(log.observe("sealed", &checks));
        for _ in 0..100 {
            assert!(!log.observe("sealed", &checks));
        }
        assert!(log.observe("ok", &checks));
    }
}
