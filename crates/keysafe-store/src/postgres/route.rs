//! Where reads go, and what a write is told when no primary is reachable (docs/adr/0012).
//!
//! Reads normally use the primary's pool (`target_session_attrs` as the URL says, usually
//! `read-write`), so a node reads its own writes. When that pool cannot connect (the primary is
//! gone and a failover is under way), the route turns *degraded*: reads go to a second, small
//! pool whose connections take any host that answers (`target_session_attrs=any`), a standby
//! included, and a background probe looks for a primary every [`PROBE_INTERVAL`] until it finds
//! one (a connection on which `pg_is_in_recovery()` is false); then reads go back to the
//! primary. A read never waits for the probe.
//!
//! Writes always go to the primary. When the writer cannot get a primary connection it asks
//! [`Route::refusal`] what to answer: `ReadOnly` when a host answers and takes no writes (a
//! standby, or one being promoted: the database is readable, writes will work again after the
//! promotion), otherwise `Unavailable`.

use super::errors::{Class, classify, pool_error, store_error};
use deadpool_postgres::{Object, Pool, PoolError};
use keysafe_core::store::{StoreError, StoreResult};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a degraded route looks for a primary.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// How many times a refused write asks whether a read-only host answers.
const REFUSAL_CHECKS: u32 = 8;

/// What reads take: the shared route.
pub(crate) type Reads = Arc<Route>;

pub(crate) struct Route {
    primary: Pool,
    any: Pool,
    /// No primary connection could be made lately: reads use `any`.
    degraded: AtomicBool,
    /// A probe task is running.
    probing: AtomicBool,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

/// Whether failing to get a connection means the server could not be reached (rather than a
/// busy pool, which says nothing about the primary).
pub(crate) fn unreachable(e: &PoolError) -> bool {
    match e {
        PoolError::Backend(_) => true,
        PoolError::Timeout(t) => matches!(t, deadpool_postgres::TimeoutType::Create),
        _ => false,
    }
}

impl Route {
    pub(crate) fn new(primary: Pool, any: Pool) -> Arc<Self> {
        Arc::new(Self {
            primary,
            any,
            degraded: AtomicBool::new(false),
            probing: AtomicBool::new(false),
        })
    }

    /// The primary's pool (writes, and what must be read from the primary).
    pub(crate) fn primary(&self) -> &Pool {
        &self.primary
    }

    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// A connection for reads: the primary's, or, while no primary is reachable, any host's.
    pub(crate) async fn read_conn(self: &Arc<Self>) -> StoreResult<Object> {
        if !self.is_degraded() {
            match self.primary.get().await {
                Ok(c) => return Ok(c),
                Err(e) if unreachable(&e) => {
                    tracing::warn!(
                        error = %pool_error(e),
                        "no primary database server reachable: reads go to any server that \
                         answers (a standby) until one is"
                    );
                    self.lost_primary();
                }
                Err(e) => return Err(pool_error(e)),
            }
        }
        self.any.get().await.map_err(pool_error)
    }

    /// A transaction just committed through the primary pool (which connects only to a
    /// read-write server): reads go to the primary again at once, so that a write is never
    /// followed by a read from a standby that has not replayed it yet.
    pub(crate) fn primary_ok(&self) {
        self.degraded.store(false, Ordering::Relaxed);
    }

    /// Called when a primary connection failed: reads move to any host, and a probe starts
    /// looking for a primary. The primary pool's idle connections are dropped: after a
    /// failover they all lead to the server that went away, and a retry must connect afresh
    /// rather than take the next dead one.
    pub(crate) fn lost_primary(self: &Arc<Self>) {
        self.primary.retain(|_, _| false);
        self.degraded.store(true, Ordering::Relaxed);
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                let Some(route) = me.upgrade() else { return };
                if route.primary.is_closed() {
                    route.probing.store(false, Ordering::Release);
                    return;
                }
                if route.primary_answers().await {
                    route.degraded.store(false, Ordering::Relaxed);
                    route.probing.store(false, Ordering::Release);
                    tracing::info!("a primary database server is reachable again");
                    return;
                }
            }
        });
    }

    /// Whether a primary connection works now (made or taken from the pool, and the server on
    /// its other end not in recovery).
    async fn primary_answers(&self) -> bool {
        let Ok(c) = self.primary.get().await else {
            return false;
        };
        match c.query_one("SELECT pg_is_in_recovery()", &[]).await {
            Ok(row) => !row.try_get::<_, bool>(0).unwrap_or(true),
            Err(_) => {
                // A dead pooled connection: not returned to the pool.
                drop(Object::take(c));
                false
            }
        }
    }

    /// What a write that found no primary is told: `ReadOnly` when a standby answers, else
    /// `Unavailable` carrying `cause`. Also marks the route degraded.
    ///
    /// A host is asked up to [`REFUSAL_CHECKS`] times, [`PROBE_INTERVAL`] apart (2 s): while a
    /// standby is promoted there are moments when neither a primary nor a read-only host
    /// answers, and a refusal then would be `Unavailable` for what is a read-only database.
    /// Only a write that finds no server at all waits that long.
    pub(crate) async fn refusal(self: &Arc<Self>, cause: StoreError) -> StoreError {
        self.lost_primary();
        for check in 0..REFUSAL_CHECKS {
            if check > 0 {
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            match self.standby_answers().await {
                Ok(true) => return StoreError::ReadOnly,
                // A host answers and takes writes: a primary appeared meanwhile (the caller
                // may try it once more).
                Ok(false) => return cause,
                Err(_) => {}
            }
        }
        cause
    }

    /// Whether some host answers and does not take writes: in recovery (a standby), or out of
    /// recovery but still read-only (seen for a few seconds while pg_auto_failover promotes a
    /// standby; `target_session_attrs=read-write` refuses such a host too).
    async fn standby_answers(&self) -> StoreResult<bool> {
        let c = self.any.get().await.map_err(pool_error)?;
        match c
            .query_one(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
                &[],
            )
            .await
        {
            Ok(row) => Ok(row.try_get::<_, bool>(0).map_err(store_error)?),
            Err(e) => {
                if classify(&e) == Class::Connection {
                    drop(Object::take(c));
                }
                Err(store_error(e))
            }
        }
    }

    pub(crate) fn close(&self) {
        self.primary.close();
        self.any.close();
    }
}
