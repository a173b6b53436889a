//! Audit entries of requests nobody authenticated and that changed nothing (health checks,
//! refusals of a missing or unknown certificate, garbage paths, failed registrations): counted
//! always, recorded only as a sample, so that a caller without credentials cannot grow the
//! chain at its request rate. Per interval, the first `per_source` requests of each source
//! address (an IPv6 address counts by its /64) and at most `total` in all are recorded as full
//! entries; every further one is only counted, and one summary entry per interval records how
//! many were left out and from how many sources. Requests of authenticated clients, and any
//! request that changed something, are never sampled: each keeps its own entry.

use crate::config::AnonymousSampling;
use keysafe_net::SourceKey;
use keysafe_proto::audit::AuditEvent;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// The operation name of a summary entry.
pub const SUMMARY_OPERATION: &str = "ANONYMOUS SUMMARY";
/// The outcome of a summary entry.
pub const SUMMARY_OUTCOME: &str = "suppressed";
/// Distinct suppressed sources counted per interval at most (the summary then says "at least").
const MAX_COUNTED_SOURCES: usize = 10_000;

#[derive(Debug)]
pub struct AnonymousAudit {
    config: AnonymousSampling,
    node: String,
    window: Mutex<Window>,
    /// Kept once the metrics recorder is installed (see `metrics::recorder_installed`).
    counters: std::sync::OnceLock<[metrics::Counter; 2]>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    /// When the window began, in Unix milliseconds (for the summary).
    start_ms: i64,
    recorded: u32,
    per_source: HashMap<SourceKey, u32>,
    suppressed: u64,
    suppressed_sources: HashSet<SourceKey>,
}

impl Window {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            start_ms: keysafe_proto::Timestamp::now().unix_millis(),
            recorded: 0,
            per_source: HashMap::new(),
            suppressed: 0,
            suppressed_sources: HashSet::new(),
        }
    }
}

/// Whether an anonymous request gets its own entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    Record,
    Suppress,
}

/// `keysafe_audit_anonymous_requests_total` by disposition: recorded, suppressed.
fn disposition_counters() -> [metrics::Counter; 2] {
    ["recorded", "suppressed"].map(
        |label| metrics::counter!("keysafe_audit_anonymous_requests_total", "disposition" => label),
    )
}

impl AnonymousAudit {
    pub fn new(config: AnonymousSampling, node: String) -> Self {
        Self {
            config,
            node,
            window: Mutex::new(Window::new()),
            counters: std::sync::OnceLock::new(),
        }
    }

    pub fn config(&self) -> AnonymousSampling {
        self.config
    }

    /// Decides for one anonymous request from `remote`. When the interval has ended, the
    /// summary of the interval that ended comes back too, to be recorded first.
    pub fn sample(&self, remote: Option<IpAddr>) -> (Sample, Option<AuditEvent>) {
        let key = remote.map(SourceKey::of);
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let summary = if w.start.elapsed() >= self.config.interval {
            self.roll(&mut w)
        } else {
            None
        };
        let from_source = key.and_then(|k| w.per_source.get(&k).copied()).unwrap_or(0);
        let decision = if w.recorded < self.config.total && from_source < self.config.per_source {
            w.recorded += 1;
            if let Some(k) = key {
                *w.per_source.entry(k).or_insert(0) += 1;
            }
            Sample::Record
        } else {
            w.suppressed += 1;
            if let Some(k) = key
                && w.suppressed_sources.len() < MAX_COUNTED_SOURCES
            {
                w.suppressed_sources.insert(k);
            }
            Sample::Suppress
        };
        drop(w);
        let i = match decision {
            Sample::Record => 0,
            Sample::Suppress => 1,
        };
        if crate::metrics::recorder_installed() {
            self.counters.get_or_init(disposition_counters)[i].increment(1);
        } else {
            disposition_counters()[i].increment(1);
        }
        (decision, summary)
    }

    /// Ends the current interval if it is over (or `force`), returning its summary entry when
    /// something was left out.
    pub fn flush(&self, force: bool) -> Option<AuditEvent> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if force || w.start.elapsed() >= self.config.interval {
            self.roll(&mut w)
        } else {
            None
        }
    }

    fn roll(&self, w: &mut Window) -> Option<AuditEvent> {
        let ended = std::mem::replace(w, Window::new());
        if ended.suppressed == 0 {
            return None;
        }
        let sources = ended.suppressed_sources.len();
        let at_least = if sources >= MAX_COUNTED_SOURCES {
            "at least "
        } else {
            ""
        };
        Some(AuditEvent {
            time: keysafe_proto::Timestamp::now().unix_millis(),
            node: self.node.clone(),
            request_id: String::new(),
            remote: String::new(),
            client: None,
            org: None,
            operation: SUMMARY_OPERATION.to_owned(),
            target: format!(
                "suppressed={} sources={at_least}{sources} since={}",
                ended.suppressed,
                keysafe_proto::Timestamp::from_unix_millis(ended.start_ms).to_rfc3339()
            ),
            version: None,
            outcome: SUMMARY_OUTCOME.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn audit(per_source: u32, total: u32) -> AnonymousAudit {
        AnonymousAudit::new(
            AnonymousSampling {
                interval: Duration::from_secs(3600),
                per_source,
                total,
            },
            "n".into(),
        )
    }

    #[test]
    fn samples_per_source_and_in_total_then_summarises() {
        let a = audit(2, 3);
        let x: IpAddr = "127.0.0.2".parse().unwrap();
        let y: IpAddr = "127.0.0.3".parse().unwrap();
        let z: IpAddr = "127.0.0.4".parse().unwrap();
        assert_eq!(a.sample(Some(x)).0, Sample::Record);
        assert_eq!(a.sample(Some(x)).0, Sample::Record);
        assert_eq!(a.sample(Some(x)).0, Sample::Suppress);
        assert_eq!(a.sample(Some(y)).0, Sample::Record);
        // The total is reached: a new source is only counted.
        assert_eq!(a.sample(Some(z)).0, Sample::Suppress);
        let s = a.flush(true).unwrap();
        assert_eq!(s.operation, SUMMARY_OPERATION);
        assert!(
            s.target.starts_with("suppressed=2 sources=2 "),
            "{}",
            s.target
        );
        // A fresh interval records again, and has nothing to summarise yet.
        assert_eq!(a.sample(Some(z)).0, Sample::Record);
        assert!(a.flush(true).is_none());
    }
}
