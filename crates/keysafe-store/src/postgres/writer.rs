//! The writer: one task per store takes every queued change, applies them in one READ COMMITTED
//! transaction, commits once, and only then answers each caller. A caller is never told "done"
//! before the commit. A batch first runs without savepoints (each is two more round trips per
//! change, and most batches have no failure); when a change fails, that run is rolled back
//! whole and the batch runs again with each change inside its own savepoint, so one failure does
//! not spoil the others.
//!
//! Every write transaction first locks the one row of `audit_head` (`SELECT ... FOR UPDATE`).
//! Writers of all keysafe nodes on the database therefore run one at a time, each seeing every
//! earlier commit (READ COMMITTED takes a fresh snapshot per statement, after the lock was
//! granted): the audit chain's next seq is read under the lock, and the compare-and-set checks
//! of the changes (token counters, deposit versions, ACL serials, group epochs, keyring rows)
//! see the latest committed state, as SQLite's single exclusive writer does. The statements also
//! lock the rows they check (conditional UPDATEs, `FOR UPDATE` reads), a second line of defence
//! should a statement ever run outside the head lock.
//!
//! A serialization failure or deadlock (SQLSTATE 40001 / 40P01, never recognised by message)
//! rolls the whole transaction back, so the batch is run again from the start, a bounded number
//! of times: no change of a retried batch was applied, and none is applied twice. A connection
//! that breaks (or turns out to be on a standby) before COMMIT is sent has committed nothing:
//! the batch runs once more on a fresh connection, so a failover costs the batch one reconnect,
//! not an error. A failure at COMMIT that leaves the outcome unknown (the connection dropped)
//! is never retried. When no primary can be reached at all, the batch fails with what the
//! route says (`ReadOnly` while a standby answers, see `route`).
//!
//! A change that other nodes cache (`Mutation::change`) bumps the change serial and NOTIFYs
//! `keysafe_changes` with `SERIAL CHANGE` in its own savepoint: the announcement goes out when
//! the transaction commits, and not at all if the change is rolled back (see `notify`).

use super::audit::{self, SharedHead};
use super::errors::{Class, classify, pool_error, store_error};
use super::mutations;
use super::route::Reads;
use keysafe_core::store::{
    Applied, AuditAppendError, AuditHead, Mutation, RowAuthMode, RowAuthSlot, SpoolBatch,
    SpoolReplay, StoreError, StoreResult,
};
use keysafe_proto::audit::AuditEvent;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub(crate) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// A failure inside the write transaction: a decision of the change's own code (`Store`), or
/// an error from the database, classified by the writer (`Db`).
#[derive(Debug)]
pub(crate) enum TxError {
    Store(StoreError),
    Db(tokio_postgres::Error),
}

pub(crate) type TxResult<T> = Result<T, TxError>;

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Db(e)
    }
}

/// How many times a batch runs at most when the database aborts it for a serialization
/// failure or a deadlock.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// What the writer is asked to do.
// Mutations are moved through the channel whole; boxing them would add an allocation per write.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Job {
    /// A change with the audit event of the request that made it (appended in the change's
    /// savepoint, so both commit or neither does).
    Mutate {
        mutation: Mutation,
        audit: Option<AuditEvent>,
        reply: oneshot::Sender<StoreResult<Applied>>,
    },
    /// Audit events alone (reads and refusals, batched by the server). On failure they go back
    /// to the caller with the error.
    Audit {
        events: Vec<AuditEvent>,
        reply: oneshot::Sender<Result<(), AuditAppendError>>,
    },
    /// A batch of entries a node spooled while the database was read-only, appended with a
    /// record of its id (refused as `AlreadyExists`, appending nothing, when recorded before).
    Spooled {
        batch: SpoolBatch,
        reply: oneshot::Sender<Result<SpoolReplay, AuditAppendError>>,
    },
}

impl Job {
    /// Whether this job appends to the audit chain.
    fn appends(&self) -> bool {
        match self {
            Job::Mutate { audit, .. } => audit.is_some(),
            Job::Audit { events, .. } => !events.is_empty(),
            Job::Spooled { .. } => true,
        }
    }

    fn answer(self, result: StoreResult<Applied>) {
        // A caller that stopped waiting no longer needs the answer.
        match self {
            Job::Mutate { reply, .. } => {
                let _ = reply.send(result);
            }
            Job::Audit { events, reply } => {
                let _ = reply.send(
                    result
                        .map(|_| ())
                        .map_err(|error| AuditAppendError { error, events }),
                );
            }
            Job::Spooled { batch, reply } => {
                let _ = reply.send(match result {
                    Ok(_) => Ok(SpoolReplay::Appended),
                    Err(StoreError::AlreadyExists) => Ok(SpoolReplay::AlreadyAppended),
                    Err(error) => Err(AuditAppendError {
                        error,
                        events: batch.events,
                    }),
                });
            }
        }
    }
}

/// Counters the store exposes.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub retries: AtomicU64,
}

pub(crate) struct Writer {
    pub route: Reads,
    /// `SET LOCAL lock_timeout = ...` (see `PgConfig::with_lock_timeout`).
    pub set_lock_timeout: String,
    pub head: AuditHead,
    pub shared: SharedHead,
    pub counters: Arc<Counters>,
    /// The row authenticator the service installed (ADR 0013), read once per batch.
    pub row_auth: RowAuthSlot,
}

/// Why a transaction attempt ended early.
enum Abort {
    /// Rolled back by the database (serialization failure, deadlock): run the batch again.
    Retry(tokio_postgres::Error),
    /// Every job of the batch fails with this.
    Fail(StoreError),
    /// The connection broke, or its server stopped accepting writes (a failover), before
    /// COMMIT was sent: nothing was committed. The connection is dropped; the batch may run
    /// once more on a fresh one.
    Broken(StoreError),
    /// The connection broke at COMMIT: the outcome is unknown, so the batch is not run again.
    Unknown(StoreError),
    /// A change failed in a run without savepoints: nothing was committed; the batch runs
    /// again with a savepoint around each change.
    Isolate,
}

fn abort(e: tokio_postgres::Error) -> Abort {
    match classify(&e) {
        Class::Retry => Abort::Retry(e),
        Class::ReadOnly | Class::Connection => Abort::Broken(store_error(e)),
        Class::Busy | Class::Statement => Abort::Fail(store_error(e)),
    }
}

impl Writer {
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
        let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch).await;
        }
        tracing::debug!("postgres writer stopped");
    }

    async fn commit_batch(&mut self, batch: &mut Vec<Job>) {
        let start = self.head.clone();
        let mut attempt = 1;
        let mut reconnected = false;
        let mut isolate = false;
        let outcome = loop {
            match self.attempt(batch, isolate).await {
                Ok(results) => break Ok(results),
                Err(Abort::Isolate) if !isolate => {
                    self.head.clone_from(&start);
                    isolate = true;
                }
                Err(Abort::Isolate) => {
                    break Err(StoreError::Backend(
                        "a change failed outside a savepoint while savepoints were in use".into(),
                    ));
                }
                Err(Abort::Broken(e)) if !reconnected => {
                    // Nothing of it committed: once more, on a fresh connection (to the new
                    // primary after a failover, or refused with what the route says).
                    tracing::info!(error = %e, "the database connection broke before COMMIT; running the batch again on a fresh one");
                    self.head.clone_from(&start);
                    reconnected = true;
                }
                Err(Abort::Retry(e)) if attempt < MAX_ATTEMPTS => {
                    self.head.clone_from(&start);
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        attempt,
                        sqlstate = e.code().map(|c| c.code()),
                        "the database rolled the write transaction back; running it again"
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(Abort::Retry(e)) => break Err(store_error(e)),
                Err(Abort::Fail(e) | Abort::Broken(e) | Abort::Unknown(e)) => break Err(e),
            }
        };
        match outcome {
            Ok(results) => {
                self.publish();
                for (job, r) in batch.drain(..).zip(results) {
                    job.answer(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write transaction failed; nothing of the batch was applied");
                self.head = start;
                self.publish();
                for job in batch.drain(..) {
                    job.answer(Err(e.clone()));
                }
            }
        }
    }

    /// Publishes the committed head, before any caller of the batch is answered: a caller that
    /// sees its write done sees a head at least as far as its entries.
    fn publish(&self) {
        match self.shared.lock() {
            Ok(mut h) => h.clone_from(&self.head),
            Err(poisoned) => poisoned.into_inner().clone_from(&self.head),
        }
    }

    /// One run of the batch's transaction. On a connection-level failure the connection is
    /// taken out of the pool, so the next attempt connects afresh (with
    /// `target_session_attrs=read-write`, to whichever host is the primary now).
    async fn attempt(
        &mut self,
        batch: &[Job],
        isolate: bool,
    ) -> Result<Vec<StoreResult<Applied>>, Abort> {
        let mut conn = match self.route.primary().get().await {
            Ok(c) => c,
            Err(e) if super::route::unreachable(&e) => {
                let refusal = self.route.refusal(pool_error(e)).await;
                if refusal == StoreError::ReadOnly {
                    return Err(Abort::Fail(refusal));
                }
                // While the route looked, a standby may have been promoted: one more try.
                match self.route.primary().get().await {
                    Ok(c) => c,
                    Err(_) => return Err(Abort::Fail(refusal)),
                }
            }
            Err(e) => return Err(Abort::Fail(pool_error(e))),
        };
        let auth = self.row_auth.get();
        let r = run_transaction(
            &mut conn,
            &self.set_lock_timeout,
            batch,
            &mut self.head,
            &auth,
            isolate,
        )
        .await;
        if let Err(Abort::Broken(_) | Abort::Unknown(_)) = &r {
            // The server went away or refuses writes: this connection is of no more use, and
            // reads look elsewhere until a primary answers again.
            drop(deadpool_postgres::Object::take(conn));
            self.route.lost_primary();
        }
        if r.is_ok() {
            self.route.primary_ok();
        }
        r
    }
}

/// 20 ms, 40 ms, 80 ms, ... plus up to as much again of jitter, so that two nodes that
/// deadlocked do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let base = 20u64 << attempt.min(6);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    ) % base;
    Duration::from_millis(base + jitter)
}

async fn run_transaction(
    conn: &mut deadpool_postgres::Object,
    set_lock_timeout: &str,
    batch: &[Job],
    head: &mut AuditHead,
    auth: &RowAuthMode,
    isolate: bool,
) -> Result<Vec<StoreResult<Applied>>, Abort> {
    // READ COMMITTED whatever default_transaction_isolation says: statements after the head
    // lock must see every commit made before it was granted.
    let mut tx = conn
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(abort)?;
    tx.batch_execute(set_lock_timeout).await.map_err(abort)?;
    let diverged = reconcile_head(&tx, head).await?;
    // Under the head lock: a newer node's migration committed before it, so this node writes
    // nothing more (see `crate::schema`).
    super::migrate::check_not_newer(&*tx)
        .await
        .map_err(Abort::Fail)?;
    let batch_start = head.clone();
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        if !isolate {
            // Without savepoints the first failure ends the run (the transaction is rolled
            // back when `tx` drops); only a failure that dooms the whole batch keeps its own
            // meaning (a lost connection, a serialization failure, the chain altered).
            if diverged && job.appends() {
                return Err(Abort::Isolate);
            }
            match apply_job(&tx, job, head, auth).await {
                Ok(applied) => results.push(Ok(applied)),
                Err(TxError::Db(e)) if !matches!(classify(&e), Class::Statement) => {
                    return Err(abort(e));
                }
                Err(_) => return Err(Abort::Isolate),
            }
            continue;
        }
        let sp = tx.savepoint("job").await.map_err(abort)?;
        let before = head.clone();
        let r = if diverged && job.appends() {
            Err(TxError::Store(StoreError::Unavailable(
                "the audit chain was altered under this node".into(),
            )))
        } else {
            apply_job(&sp, job, head, auth).await
        };
        match r {
            Ok(applied) => {
                sp.commit().await.map_err(abort)?;
                results.push(Ok(applied));
            }
            Err(e) => {
                let e = match e {
                    TxError::Store(e) => e,
                    TxError::Db(e) => match classify(&e) {
                        Class::Statement => store_error(e),
                        _ => return Err(abort(e)),
                    },
                };
                *head = before;
                sp.rollback().await.map_err(abort)?;
                results.push(Err(e));
            }
        }
    }
    if *head != batch_start {
        audit::store_head(&tx, head).await.map_err(tx_abort)?;
    }
    tx.commit().await.map_err(|e| match classify(&e) {
        Class::Retry => Abort::Retry(e),
        _ => Abort::Unknown(StoreError::Unavailable(format!(
            "the commit failed and its outcome is unknown: {}",
            store_error(e)
        ))),
    })?;
    Ok(results)
}

fn tx_abort(e: TxError) -> Abort {
    match e {
        TxError::Store(e) => Abort::Fail(e),
        TxError::Db(e) => abort(e),
    }
}

/// Locks the chain head and compares it with this node's. Ahead of ours: another node (or
/// process) appended; adopt it. Behind ours, the same seq with another hash, or not the last
/// row of `audit_log`: rows were removed or rewritten; refuse to append (the trail fails
/// closed) rather than chain onto an altered log. Returns whether appends are refused.
async fn reconcile_head(tx: &Tx<'_>, head: &mut AuditHead) -> Result<bool, Abort> {
    let db = audit::lock_head(tx).await.map_err(tx_abort)?;
    let logged = audit::last_logged(tx).await.map_err(tx_abort)?;
    if logged != db {
        tracing::error!(
            head_seq = db.seq,
            log_seq = logged.seq,
            "audit_head does not match the last audit entry: the trail was altered; refusing \
             to append"
        );
        return Ok(true);
    }
    if db == *head {
        return Ok(false);
    }
    if db.seq > head.seq {
        *head = db;
        return Ok(false);
    }
    tracing::error!(
        memory_seq = head.seq,
        database_seq = db.seq,
        "the audit chain in the database no longer ends where this node left it: entries were \
         removed or rewritten; refusing to append"
    );
    Ok(true)
}

/// Applies one job inside its savepoint; moves `head` past every entry it appends.
async fn apply_job(
    tx: &Tx<'_>,
    job: &Job,
    head: &mut AuditHead,
    auth: &RowAuthMode,
) -> TxResult<Applied> {
    match job {
        Job::Mutate {
            mutation, audit, ..
        } => {
            let pending = mutations::integrity::before(tx, mutation, auth).await?;
            let applied = mutations::apply(tx, mutation).await?;
            mutations::integrity::after(tx, mutation, &applied, auth, pending).await?;
            if let Some(change) = mutation.change() {
                super::notify::announce(tx, &change).await?;
            }
            if let Some(e) = audit {
                audit::append(tx, head, e).await?;
            }
            Ok(applied)
        }
        Job::Audit { events, .. } => {
            audit::append_many(tx, head, events).await?;
            Ok(Applied::Done)
        }
        Job::Spooled { batch, .. } => {
            super::mutations::record_spool_batch(
                tx,
                &batch.id,
                batch.events.len(),
                head.seq.saturating_add(1),
            )
            .await?;
            audit::append_many(tx, head, &batch.events).await?;
            Ok(Applied::Done)
        }
    }
}
