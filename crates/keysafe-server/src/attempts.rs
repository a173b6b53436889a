//! Per-source attempt limits for what unauthenticated callers can start: counted events (failed
//! registrations, registrations left pending) per source address in fixed windows, with the
//! attempts still in progress counted too, so that many concurrent attempts cannot all pass the
//! check before the first one is counted.
//!
//! Memory is bounded without ever refusing everybody: the table sweeps expired windows as it
//! goes and, when it is full of live ones, forgets the oldest. Forgetting lets that source start
//! afresh (at most `limit` more attempts), which is the price of staying open to new sources.
//! Sources are [`SourceKey`]s: an IPv6 address counts by its /64.

use keysafe_net::SourceKey;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct AttemptLimiter {
    limit: u32,
    window: Duration,
    max_tracked: usize,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<SourceKey, Entry>,
    /// Window starts in the order they began; a start that no longer matches its entry is
    /// stale and skipped.
    order: VecDeque<(SourceKey, Instant)>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: Instant,
    counted: u32,
    in_flight: u32,
}

/// An attempt in progress. Dropping it without [`Attempt::count`] leaves the source's count as
/// it was.
#[derive(Debug)]
pub struct Attempt {
    limiter: Arc<AttemptLimiter>,
    key: SourceKey,
    counted: bool,
}

impl Attempt {
    /// The attempt counts against its source (a failure, a pending registration).
    pub fn count(mut self) {
        self.counted = true;
        // `Drop` does the bookkeeping.
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.limiter.finish(self.key, self.counted);
    }
}

impl AttemptLimiter {
    pub fn new(limit: u32, window: Duration) -> Arc<Self> {
        Self::with_capacity(limit, window, 100_000)
    }

    pub fn with_capacity(limit: u32, window: Duration, max_tracked: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            window,
            max_tracked: max_tracked.max(1),
            table: Mutex::new(Table::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding the lock; a poisoned table is still consistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts an attempt from `ip`, or `Err(retry_after)` when its source has used up its
    /// attempts for this window (counted ones plus those in progress).
    pub fn begin(self: &Arc<Self>, ip: IpAddr) -> Result<Attempt, Duration> {
        let key = SourceKey::of(ip);
        let now = Instant::now();
        let mut t = self.lock();
        self.sweep(&mut t, now);
        if !t.entries.contains_key(&key) && t.entries.len() >= self.max_tracked {
            Self::evict_oldest(&mut t);
        }
        let mut restarted = !t.entries.contains_key(&key);
        let entry = t.entries.entry(key).or_insert(Entry {
            start: now,
            counted: 0,
            in_flight: 0,
        });
        if now.duration_since(entry.start) >= self.window {
            entry.start = now;
            entry.counted = 0;
            restarted = true;
        }
        if entry.counted.saturating_add(entry.in_flight) >= self.limit {
            let left = self.window.saturating_sub(now.duration_since(entry.start));
            return Err(left.max(Duration::from_secs(1)));
        }
        entry.in_flight += 1;
        let start = entry.start;
        if restarted {
            t.order.push_back((key, start));
        }
        drop(t);
        Ok(Attempt {
            limiter: self.clone(),
            key,
            counted: false,
        })
    }

    fn finish(&self, key: SourceKey, counted: bool) {
        let now = Instant::now();
        let mut t = self.lock();
        let remove = match t.entries.get_mut(&key) {
            Some(e) => {
                e.in_flight = e.in_flight.saturating_sub(1);
                if counted {
                    e.counted = e.counted.saturating_add(1);
                }
                e.counted == 0 && e.in_flight == 0
            }
            // Forgotten while in progress (a full table): a counted attempt starts a new window.
            None if counted => {
                if t.entries.len() >= self.max_tracked {
                    Self::evict_oldest(&mut t);
                }
                t.entries.insert(
                    key,
                    Entry {
                        start: now,
                        counted: 1,
                        in_flight: 0,
                    },
                );
                t.order.push_back((key, now));
                false
            }
            None => false,
        };
        if remove {
            t.entries.remove(&key);
        }
    }

    /// Drops expired windows from the front of the order (oldest first), and stale order items.
    fn sweep(&self, t: &mut Table, now: Instant) {
        while let Some(&(key, start)) = t.order.front() {
            match t.entries.get(&key) {
                Some(e) if e.start != start => {
                    t.order.pop_front();
                }
                Some(e) if now.duration_since(e.start) >= self.window && e.in_flight == 0 => {
                    t.entries.remove(&key);
                    t.order.pop_front();
                }
                Some(_) => break,
                None => {
                    t.order.pop_front();
                }
            }
        }
    }

    fn evict_oldest(t: &mut Table) {
        while let Some((key, start)) = t.order.pop_front() {
            if t.entries.get(&key).is_some_and(|e| e.start == start) {
                t.entries.remove(&key);
                return;
            }
        }
        // The order lost track (cannot happen: every entry has its start queued); keep the
        // bound anyway.
        if let Some(k) = t.entries.keys().next().copied() {
            t.entries.remove(&k);
        }
    }

    /// Sources tracked now (for metrics and tests).
    pub fn tracked(&self) -> usize {
        self.lock().entries.len()
    }
}

/// A fixed-window count of events from every source together.
#[derive(Debug)]
pub struct WindowCounter {
    limit: u64,
    window: Duration,
    state: Mutex<(Instant, u64)>,
}

impl WindowCounter {
    pub fn new(limit: u64, window: Duration) -> Self {
        Self {
            limit,
            window,
            state: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Takes one event if the window has room; `Err(retry_after)` otherwise.
    pub fn take(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(s.0) >= self.window {
            *s = (now, 0);
        }
        if s.1 >= self.limit {
            return Err(self
                .window
                .saturating_sub(now.duration_since(s.0))
                .max(Duration::from_secs(1)));
        }
        s.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_per_source_and_lets_others_in() {
        let l = AttemptLimiter::new(2, Duration::from_secs(60));
        l.begin(ip("127.0.0.2")).unwrap().count();
        l.begin(ip("127.0.0.2")).unwrap().count();
        assert!(l.begin(ip("127.0.0.2")).is_err());
        assert!(l.begin(ip("127.0.0.3")).is_ok());
        // An uncounted attempt (a success) costs nothing and leaves no entry.
        let l = AttemptLimiter::new(1, Duration::from_secs(60));
        for _ in 0..5 {
            drop(l.begin(ip("127.0.0.2")).unwrap());
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn attempts_in_progress_count_so_concurrent_ones_cannot_race_past() {
        let l = AttemptLimiter::new(3, Duration::from_secs(60));
        let held: Vec<Attempt> = (0..3).map(|_| l.begin(ip("10.0.0.1")).unwrap()).collect();
        assert!(
            l.begin(ip("10.0.0.1")).is_err(),
            "three in progress fill the limit"
        );
        drop(held);
        assert!(l.begin(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn ipv6_counts_by_slash_64() {
        let l = AttemptLimiter::new(1, Duration::from_secs(60));
        l.begin(ip("2001:db8::1")).unwrap().count();
        assert!(l.begin(ip("2001:db8::ffff")).is_err());
        assert!(l.begin(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn expired_windows_are_swept_and_reopen() {
        let l = AttemptLimiter::new(1, Duration::ZERO);
        l.begin(ip("127.0.0.2")).unwrap().count();
        assert!(l.begin(ip("127.0.0.2")).is_ok());
        l.begin(ip("127.0.0.3")).unwrap().count();
        let _ = l.begin(ip("127.0.0.4"));
        assert!(
            l.tracked() <= 2,
            "expired entries are swept: {}",
            l.tracked()
        );
    }

    /// A full table of live windows forgets its oldest source instead of refusing new ones:
    /// it never becomes a lockout for everybody.
    #[test]
    fn a_full_table_never_refuses_new_sources() {
        let l = AttemptLimiter::with_capacity(1, Duration::from_secs(3600), 100);
        for i in 0..100u8 {
            l.begin(ip(&format!("10.1.0.{i}"))).unwrap().count();
        }
        assert_eq!(l.tracked(), 100);
        for i in 0..50u8 {
            assert!(
                l.begin(ip(&format!("10.2.0.{i}"))).is_ok(),
                "a new source is admitted when the table is full"
            );
        }
        assert!(l.tracked() <= 100);
        // The newest sources are still limited.
        assert!(l.begin(ip("10.1.0.99")).is_err());
    }

    #[test]
    fn window_counter() {
        let c = WindowCounter::new(2, Duration::from_secs(60));
        assert!(c.take().is_ok());
        assert!(c.take().is_ok());
        assert!(c.take().is_err());
    }
}
