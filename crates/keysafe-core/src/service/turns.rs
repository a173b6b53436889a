//! Turns at writing one deposit on this node. Writers of one deposit take turns: a turn reads
//! the head, chooses the next version number (it is sealed into the ciphertext, so it is chosen
//! before the write) and queues the write. An unconditional put ends its turn as soon as its
//! version is queued, not when it commits, and leaves the version it queued as the deposit's
//! pending head: the next writer builds on it, and the store's writer, which applies queued
//! changes in order, commits both (often in one transaction). Everything else that writes a
//! deposit settles first: it waits in its turn until the pending write has finished, then
//! reads the stored head.
//!
//! The pending head is a hint, never a guarantee: the store checks every write's expected
//! current version (compare-and-set), so a wrong hint (a pending write that failed, a stripe
//! shared with another deposit, a write by another node) costs a retry, never a wrong version.

use crate::store::DepositKey;
use keysafe_proto::DepositVersion;
use tokio::sync::{Mutex, MutexGuard, watch};

/// A fixed set of async mutexes picked by hashing a deposit key: writes to one deposit take
/// turns, writes to different deposits almost never wait for each other.
pub(crate) struct Turns(Vec<Mutex<Option<Pending>>>);

/// The newest write queued on a stripe whose turn ended before it committed.
struct Pending {
    key: DepositKey,
    version: DepositVersion,
    /// Closed (its sender dropped) once the writer has its result, or gave up waiting.
    done: watch::Receiver<()>,
}

impl Pending {
    fn finished(&self) -> bool {
        self.done.has_changed().is_err()
    }
}

/// Held by a write that ended its turn with its change queued; dropped when the write's result
/// is known (or the write is abandoned), which ends the pending state it left.
pub(crate) struct InFlight(#[allow(dead_code)] watch::Sender<()>);

/// One writer's turn at a deposit.
pub(crate) struct Turn<'a> {
    key: &'a DepositKey,
    slot: MutexGuard<'a, Option<Pending>>,
}

impl Turns {
    const STRIPES: usize = 1024;

    pub(crate) fn new() -> Self {
        Self((0..Self::STRIPES).map(|_| Mutex::new(None)).collect())
    }

    /// Waits for the deposit's turn.
    pub(crate) async fn take<'a>(&'a self, key: &'a DepositKey) -> Turn<'a> {
        let slot = self.0[(stable_hash(key) % self.0.len() as u64) as usize]
            .lock()
            .await;
        Turn { key, slot }
    }
}

impl Turn<'_> {
    /// The version of this deposit's newest write queued by an earlier turn and not finished
    /// yet, if any.
    pub(crate) fn pending(&self) -> Option<DepositVersion> {
        self.slot
            .as_ref()
            .filter(|p| &p.key == self.key && !p.finished())
            .map(|p| p.version)
    }

    /// Waits, keeping the turn, until no write of this deposit queued by an earlier turn is
    /// still unfinished: the stored head read afterwards includes every one of them that
    /// committed.
    pub(crate) async fn settle(&mut self) {
        if let Some(p) = self.slot.as_mut().filter(|p| &p.key == self.key) {
            // Err once the sender is gone: the only way this channel ever ends.
            while p.done.changed().await.is_ok() {}
        }
        *self.slot = None;
    }

    /// Ends the turn with `version` queued and not yet committed: the next turn builds on it
    /// until the returned guard is dropped.
    pub(crate) fn queued(mut self, version: DepositVersion) -> InFlight {
        let (tx, done) = watch::channel(());
        *self.slot = Some(Pending {
            key: self.key.clone(),
            version,
            done,
        });
        InFlight(tx)
    }
}

fn stable_hash(key: &DepositKey) -> u64 {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() uses fixed keys, so the same key always picks the same stripe.
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keysafe_proto::{DepositName, GroupName, OrgName, Principal};

    fn key(name: &str) -> DepositKey {
        DepositKey {
            owner: Principal::Group {
                org: OrgName::parse("acme").unwrap(),
                name: GroupName::parse("ops").unwrap(),
            },
            name: DepositName::parse(name).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_queued_version_is_pending_until_its_write_finishes() {
        let turns = Turns::new();
        let k = key("a");
        let turn = turns.take(&k).await;
        assert_eq!(turn.pending(), None);
        let v1 = DepositVersion::FIRST;
        let in_flight = turn.queued(v1);
        let turn = turns.take(&k).await;
        assert_eq!(turn.pending(), Some(v1));
        drop(turn);
        drop(in_flight);
        assert_eq!(turns.take(&k).await.pending(), None);
    }

    #[tokio::test]
    async fn another_deposits_pending_write_is_not_this_ones() {
        let turns = Turns((0..1).map(|_| Mutex::new(None)).collect());
        let (a, b) = (key("a"), key("b"));
        let _in_flight = turns.take(&a).await.queued(DepositVersion::FIRST);
        let mut turn = turns.take(&b).await;
        assert_eq!(turn.pending(), None);
        // Settling for b does not wait for a's write.
        tokio::time::timeout(std::time::Duration::from_secs(5), turn.settle())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn settling_waits_for_the_pending_write_and_keeps_the_turn() {
        let turns = std::sync::Arc::new(Turns::new());
        let k = key("a");
        let in_flight = turns.take(&k).await.queued(DepositVersion::FIRST);
        let (settled_tx, mut settled_rx) = tokio::sync::oneshot::channel();
        let t = turns.clone();
        let k2 = k.clone();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let settler = tokio::spawn(async move {
            let mut turn = t.take(&k2).await;
            turn.settle().await;
            settled_tx.send(()).unwrap();
            // Still this writer's turn until told to end it.
            release_rx.await.unwrap();
            drop(turn);
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            settled_rx.try_recv().is_err(),
            "settled before the write finished"
        );
        drop(in_flight);
        settled_rx.await.unwrap();
        assert!(
            turns.0.iter().any(|m| m.try_lock().is_err()),
            "the turn is kept"
        );
        release_tx.send(()).unwrap();
        settler.await.unwrap();
        assert_eq!(turns.take(&k).await.pending(), None);
    }
}
