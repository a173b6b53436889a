//! How many connections are open at once: at most `max_connections` in all, and at most
//! `max_per_source` from one [`SourceKey`], so that one address (or one IPv6 /64) holding its
//! maximum leaves the rest for everybody else. A connection holds a [`ConnectionPermit`] for
//! its whole life; dropping it frees both counts.
//!
//! The global count is a semaphore the accept loop waits on before accepting (more connections
//! wait in the kernel's listen backlog); the per-source count is checked once the peer's address
//! is known, and a connection over it is closed at once.

use crate::source::SourceKey;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct ConnectionLimiter {
    global: Arc<Semaphore>,
    max_global: usize,
    max_per_source: usize,
    per_source: Mutex<HashMap<SourceKey, usize>>,
}

/// One of the global slots, taken before `accept`.
#[derive(Debug)]
pub struct Slot(OwnedSemaphorePermit);

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its source already holds `max_per_source` connections.
    PerSource,
}

impl Refused {
    /// A fixed label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::PerSource => "per_source",
        }
    }
}

/// An admitted connection. Dropping it frees its global slot and its source's count.
#[derive(Debug)]
pub struct ConnectionPermit {
    _slot: OwnedSemaphorePermit,
    key: SourceKey,
    limiter: Arc<ConnectionLimiter>,
}

impl ConnectionPermit {
    pub fn source(&self) -> SourceKey {
        self.key
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Ok(mut t) = self.limiter.per_source.lock()
            && let Some(n) = t.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&self.key);
            }
        }
    }
}

impl ConnectionLimiter {
    /// Both limits are at least 1.
    pub fn new(max_connections: usize, max_per_source: usize) -> Arc<Self> {
        let max_global = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            global: Arc::new(Semaphore::new(max_global)),
            max_global,
            max_per_source: max_per_source.max(1),
            per_source: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for a global slot. `None` once the limiter is closed.
    pub async fn slot(&self) -> Option<Slot> {
        self.global.clone().acquire_owned().await.ok().map(Slot)
    }

    /// Admits a connection from `ip` into `slot`, or refuses it when its source is at its
    /// maximum (the slot is freed).
    pub fn admit(self: &Arc<Self>, slot: Slot, ip: IpAddr) -> Result<ConnectionPermit, Refused> {
        let key = SourceKey::of(ip);
        let Ok(mut t) = self.per_source.lock() else {
            return Err(Refused::PerSource);
        };
        let n = t.entry(key).or_insert(0);
        if *n >= self.max_per_source {
            return Err(Refused::PerSource);
        }
        *n += 1;
        Ok(ConnectionPermit {
            _slot: slot.0,
            key,
            limiter: self.clone(),
        })
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.max_global - self.global.available_permits()
    }

    /// Connections open now from `ip`'s source.
    pub fn active_from(&self, ip: IpAddr) -> usize {
        self.per_source
            .lock()
            .ok()
            .and_then(|t| t.get(&SourceKey::of(ip)).copied())
            .unwrap_or(0)
    }

    /// Sources holding at least one connection.
    pub fn sources(&self) -> usize {
        self.per_source.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// Completes when every connection has ended (for shutdown: no new slot is handed out once
    /// this starts waiting).
    pub async fn drained(&self) {
        let n = u32::try_from(self.max_global).unwrap_or(u32::MAX);
        if let Ok(all) = self.global.acquire_many(n).await {
            drop(all);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn per_source_cap_leaves_room_for_others() {
        let l = ConnectionLimiter::new(10, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let p1 = l.admit(l.slot().await.unwrap(), a).unwrap();
        let _p2 = l.admit(l.slot().await.unwrap(), a).unwrap();
        assert_eq!(
            l.admit(l.slot().await.unwrap(), a).unwrap_err(),
            Refused::PerSource
        );
        // The refused connection gave its global slot back.
        assert_eq!(l.active(), 2);
        let _p3 = l.admit(l.slot().await.unwrap(), b).unwrap();
        assert_eq!(l.active_from(a), 2);
        drop(p1);
        assert_eq!(l.active_from(a), 1);
        let _p4 = l.admit(l.slot().await.unwrap(), a).unwrap();
        assert_eq!(l.sources(), 2);
    }

    #[tokio::test]
    async fn ipv6_slash_64_shares_one_count() {
        let l = ConnectionLimiter::new(10, 1);
        let _p = l
            .admit(l.slot().await.unwrap(), "2001:db8::1".parse().unwrap())
            .unwrap();
        assert!(
            l.admit(l.slot().await.unwrap(), "2001:db8::2".parse().unwrap())
                .is_err()
        );
        assert!(
            l.admit(l.slot().await.unwrap(), "2001:db8:0:1::1".parse().unwrap())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn drained_waits_for_every_connection() {
        let l = ConnectionLimiter::new(4, 4);
        let p = l
            .admit(l.slot().await.unwrap(), "127.0.0.1".parse().unwrap())
            .unwrap();
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(p);
        waiter.await.unwrap();
    }
}
