//! Shared state handed to every handler.

use keysafe_core::Service;
use keysafe_proto::ClientFingerprint;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    /// The server's certificate and key as served now (reloadable); its fingerprint is the
    /// SHA-256 of the certificate's public key.
    pub tls: Arc<crate::tls::ServerTls>,
    /// The last health status, so that a change is logged once rather than per probe.
    pub health_log: Arc<crate::health_log::HealthLog>,
    /// Failed registrations per source address.
    pub registration_limiter: Arc<FailureLimiter>,
    /// The audit queue and its failure policy (issue 6).
    pub audit: Arc<crate::audit::AuditTrail>,
    /// What a backup contains besides the database (issue 5).
    pub backup: Arc<crate::backup::BackupSources>,
}

impl AppState {
    /// The server's own fingerprint, of the key it serves now.
    pub fn fingerprint(&self) -> ClientFingerprint {
        self.tls.fingerprint()
    }
}

/// Counts failures per source address in fixed windows; an address past the limit is refused
/// until its window ends. Memory is bounded: when the table is full, expired windows are swept
/// and, if that is not enough, the address is refused (fail closed) rather than tracked.
#[derive(Debug)]
pub struct FailureLimiter {
    limit: u32,
    window: Duration,
    max_tracked: usize,
    table: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const MAX_TRACKED: usize = 100_000;

impl FailureLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            max_tracked: MAX_TRACKED,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` when the address has used up its failures for this window.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Ok(table) = self.table.lock() else {
            return Err(self.window);
        };
        match table.get(&ip) {
            Some((start, n)) if *n >= self.limit && start.elapsed() < self.window => {
                Err(self.window.saturating_sub(start.elapsed()))
            }
            Some(_) => Ok(()),
            // Full of live entries (failures from very many addresses): refuse addresses it
            // cannot track rather than grow without bound.
            None if table.len() >= self.max_tracked => Err(self.window),
            None => Ok(()),
        }
    }

    /// Records one failure from the address.
    pub fn record_failure(&self, ip: IpAddr) {
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        if table.len() >= self.max_tracked && !table.contains_key(&ip) {
            let window = self.window;
            table.retain(|_, (start, _)| start.elapsed() < window);
            if table.len() >= self.max_tracked {
                return;
            }
        }
        let entry = table.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address() {
        let l = FailureLimiter::new(2, Duration::from_secs(60));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(l.check(a).is_ok());
        l.record_failure(a);
        assert!(l.check(a).is_ok());
        l.record_failure(a);
        assert!(l.check(a).is_err());
        assert!(l.check(b).is_ok());
        let expired = FailureLimiter::new(1, Duration::ZERO);
        expired.record_failure(a);
        assert!(expired.check(a).is_ok());
        // Bounded: when every slot holds a live window, untracked addresses are refused.
        let mut small = FailureLimiter::new(5, Duration::from_secs(60));
        small.max_tracked = 2;
        small.record_failure(a);
        small.record_failure(b);
        let c: IpAddr = "127.0.0.4".parse().unwrap();
        small.record_failure(c);
        assert!(small.check(a).is_ok());
        assert!(small.check(c).is_err());
    }
}
