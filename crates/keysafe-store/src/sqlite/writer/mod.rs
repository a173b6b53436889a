//! The single writer: a thread of its own that owns the write connection, takes every queued
//! job, applies them in one `BEGIN IMMEDIATE` transaction (each inside its own savepoint, so
//! one failure does not spoil the others), commits once, and only then answers each caller. A
//! caller is never told "done" before the commit. Statements run directly on this thread from
//! its statement cache, so a batch costs one wake-up of the thread and one fsync, not a
//! hand-off per statement. This module owns the batching loop, the savepoints and the audit
//! chain's head; what each mutation does is in one module per aggregate, reached through
//! [`apply_one`].

mod cluster;
mod deposits;
mod groups;
mod identities;
mod integrity;
mod keyring;
mod lifecycle;
mod sharing;

use super::audit::{self, SharedHead};
use super::conn::backend_error;
use super::reads;
use super::row_cache::{self, RowCache};
use keysafe_core::store::{
    Applied, AuditAppendError, AuditHead, Mutation, RowAuthMode, RowAuthSlot, SpoolBatch,
    SpoolReplay, StoreError, StoreResult, version_row,
};
use keysafe_proto::audit::AuditEvent;
use rusqlite::Connection;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the writer is asked to do.
// Mutations are moved through the channel as they are; boxing them would add an allocation per
// write for nothing.
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
    /// What this job, applied, did to deposit rows a cached read returns: the deposit it
    /// changed, with the current version a put made as read now, inside the transaction
    /// (`None` when it changed none).
    fn cache_update(&self, conn: &Connection) -> Option<row_cache::Update> {
        let Job::Mutate { mutation, .. } = self else {
            return None;
        };
        match row_cache::effect(mutation) {
            row_cache::Effect::None => None,
            row_cache::Effect::All => Some(row_cache::Update::All),
            row_cache::Effect::One(key) => Some(row_cache::Update::Drop(key)),
            row_cache::Effect::Put(key) => Some(match reads::get_version(conn, &key, None) {
                Ok(Some((d, v))) => row_cache::Update::Keep(key, version_row(d, v)),
                Ok(None) | Err(_) => row_cache::Update::Drop(key),
            }),
        }
    }

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
            Job::Audit { events, reply, .. } => {
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

/// The writer thread's loop: runs until every sender is gone (the store was dropped), then
/// closes the connection.
pub(crate) fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    mut head: AuditHead,
    shared: SharedHead,
    row_auth: RowAuthSlot,
    rows: Arc<RowCache>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let auth = row_auth.get();
        commit_batch(&conn, &mut batch, &mut head, &shared, &auth, &rows);
    }
    tracing::debug!("sqlite writer stopped");
}

fn exec(conn: &Connection, sql: &'static str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute([]))
        .map(|_| ())
        .map_err(backend_error)
}

/// Applies one job inside its savepoint; moves `head` past every entry it appends.
fn apply_job(
    conn: &Connection,
    job: &Job,
    head: &mut AuditHead,
    auth: &RowAuthMode,
) -> StoreResult<Applied> {
    match job {
        Job::Mutate {
            mutation, audit, ..
        } => {
            let pending = integrity::before(conn, mutation, auth)?;
            let applied = apply_one(conn, mutation)?;
            integrity::after(conn, mutation, &applied, auth, pending)?;
            if mutation.change().is_some() {
                cluster::bump_serial(conn)?;
            }
            if let Some(e) = audit {
                audit::append(conn, head, e)?;
            }
            Ok(applied)
        }
        Job::Audit { events, .. } => {
            audit::append_many(conn, head, events)?;
            Ok(Applied::Done)
        }
        Job::Spooled { batch, .. } => {
            cluster::record_spool_batch(
                conn,
                &batch.id,
                batch.events.len(),
                head.seq.saturating_add(1),
            )?;
            audit::append_many(conn, head, &batch.events)?;
            Ok(Applied::Done)
        }
    }
}

/// Where the chain in the database ends, compared with where this writer left it.
enum ChainCheck {
    /// Appending may go on from `head` (ours, or a later one another process committed).
    Continue,
    /// Entries were removed or rewritten under us, or the head cannot be read: refuse to
    /// append rather than chain onto an altered log.
    Diverged,
}

/// Reads the head in the database and reconciles `head` with it. Must run inside the write
/// transaction (after `BEGIN IMMEDIATE`): only then can no other process append between this
/// read and our appends, so the sequence numbers we assign are free.
fn check_chain(conn: &Connection, head: &mut AuditHead) -> ChainCheck {
    match audit::load_head(conn) {
        Ok(db) if db == *head => ChainCheck::Continue,
        // Another process on the same file appended: adopt its head.
        Ok(db) if db.seq > head.seq => {
            *head = db;
            ChainCheck::Continue
        }
        // Behind ours, or the same seq with another hash. A restart accepts the database's
        // head, and `audit verify` reports the damage against the signed checkpoints.
        Ok(db) => {
            tracing::error!(
                memory_seq = head.seq,
                database_seq = db.seq,
                "the audit chain in the database no longer ends where this node left it: \
                 entries were removed or rewritten; refusing to append"
            );
            ChainCheck::Diverged
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the audit chain head");
            ChainCheck::Diverged
        }
    }
}

/// Publishes the committed head, before any caller of the batch is answered: a caller that
/// sees its write done sees a head at least as far as its entries.
fn publish(shared: &SharedHead, head: &AuditHead) {
    match shared.lock() {
        Ok(mut h) => h.clone_from(head),
        Err(poisoned) => poisoned.into_inner().clone_from(head),
    }
}

/// Commits a batch. `head` moves with each entry appended and is put back when a savepoint or
/// the whole transaction rolls back, so the chain in memory is always the committed one.
fn commit_batch(
    conn: &Connection,
    batch: &mut Vec<Job>,
    head: &mut AuditHead,
    shared: &SharedHead,
    auth: &RowAuthMode,
    rows: &RowCache,
) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "cannot begin a write transaction");
        for job in batch.drain(..) {
            job.answer(Err(e.clone()));
        }
        return;
    }
    // Under the write lock from here on. A newer node's migration committed before it: this
    // node writes nothing more (see `crate::schema`).
    if let Err(e) = crate::sqlite::schema::check_not_newer(conn) {
        let _ = exec(conn, "ROLLBACK");
        for job in batch.drain(..) {
            job.answer(Err(e.clone()));
        }
        return;
    }
    let diverged = matches!(check_chain(conn, head), ChainCheck::Diverged);
    let start_head = head.clone();
    let mut results = Vec::with_capacity(batch.len());
    let mut updates = Vec::new();
    let mut fatal = None;
    for job in batch.iter() {
        if let Err(e) = exec(conn, "SAVEPOINT m") {
            fatal = Some(e);
            break;
        }
        let before = head.clone();
        let r = if diverged && job.appends() {
            Err(StoreError::Unavailable(
                "the audit chain was altered under this node".into(),
            ))
        } else {
            apply_job(conn, job, head, auth)
        };
        let undo = if r.is_err() {
            *head = before;
            exec(conn, "ROLLBACK TO m")
        } else {
            updates.extend(job.cache_update(conn));
            Ok(())
        };
        if let Err(e) = undo.and_then(|()| exec(conn, "RELEASE m")) {
            fatal = Some(e);
            break;
        }
        results.push(r);
    }
    let outcome = match fatal {
        Some(e) => Err(e),
        None => exec(conn, "COMMIT"),
    };
    match outcome {
        Ok(()) => {
            // Before anyone is answered: once a write is acknowledged, no cache serves the
            // rows it replaced (see `row_cache`).
            if !updates.is_empty() {
                rows.committed(updates);
            }
            publish(shared, head);
            for (job, r) in batch.drain(..).zip(results) {
                job.answer(r);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "write transaction failed; rolling back the batch");
            *head = start_head;
            // The head adopted under the lock is committed (by another process) either way.
            publish(shared, head);
            let _ = exec(conn, "ROLLBACK");
            for job in batch.drain(..) {
                job.answer(Err(e.clone()));
            }
        }
    }
}

/// Dispatches a mutation to its aggregate's module: one function per operation.
fn apply_one(conn: &Connection, m: &Mutation) -> StoreResult<Applied> {
    match m {
        Mutation::CreateOrg(o) => identities::create_org(conn, o),
        Mutation::SetOrgAuth {
            name,
            mode,
            auth_hash,
            at,
        } => identities::set_org_auth(conn, name, *mode, auth_hash.as_deref(), *at),
        Mutation::InsertClient {
            client,
            consume_token,
        } => identities::insert_client(conn, client, consume_token.as_deref()),
        Mutation::InsertRegistrationToken(t) => identities::insert_registration_token(conn, t),
        Mutation::RotateToken {
            fingerprint,
            expected_counter,
            token,
            at,
        } => identities::rotate_token(conn, fingerprint, *expected_counter, token, *at),
        Mutation::MarkSuspectedClone {
            fingerprint,
            reason,
            at,
        } => identities::mark_suspected_clone(conn, fingerprint, reason, *at),
        Mutation::ResetToken { fingerprint, at } => identities::reset_token(conn, fingerprint, *at),
        Mutation::SetClientState {
            fingerprint,
            state,
            at,
        } => identities::set_client_state(conn, fingerprint, *state, *at),
        Mutation::SetClientRole {
            fingerprint,
            role,
            at,
        } => identities::set_client_role(conn, fingerprint, *role, *at),
        Mutation::DisableUnactivated {
            registered_before,
            at,
        } => identities::disable_unactivated(conn, *registered_before, *at),
        Mutation::PutVersion {
            org,
            key,
            expected_current,
            expected_acl_serial,
            version,
        } => deposits::put_version(
            conn,
            org,
            key,
            *expected_current,
            *expected_acl_serial,
            version,
        ),
        Mutation::SetDeleted { key, deleted, at } => {
            deposits::set_deleted(conn, key, *deleted, *at)
        }
        Mutation::Purge { key } => deposits::purge(conn, key),
        Mutation::SetAcl {
            key,
            expected_current,
            expected_acl_serial,
            grants,
            replace,
            at,
        } => sharing::set_acl(
            conn,
            key,
            *expected_current,
            *expected_acl_serial,
            grants,
            replace,
            *at,
        ),
        Mutation::CreateGroup {
            org,
            name,
            recipient,
            keys,
            at,
        } => groups::create(conn, org, name, recipient, keys, *at),
        Mutation::AddGroupMember {
            org,
            name,
            member,
            at,
        } => groups::add_member(conn, org, name, member, *at),
        Mutation::AdmitGroupMember {
            org,
            name,
            keys,
            at,
        } => groups::admit_member(conn, org, name, keys, *at),
        Mutation::RemoveGroupMember {
            org,
            name,
            member,
            expected_epoch,
            recipient,
            keys,
            at,
        } => groups::remove_member(
            conn,
            org,
            name,
            member,
            *expected_epoch,
            recipient,
            keys,
            *at,
        ),
        Mutation::InsertKek(k) => keyring::insert_kek(conn, k),
        Mutation::Rewrap {
            id,
            expected_kek,
            kek_version,
            wrapped,
        } => keyring::rewrap(conn, id, *expected_kek, *kek_version, wrapped),
        Mutation::RetireKek { version } => keyring::retire_kek(conn, *version),
        Mutation::KeepOnlySeal { keep } => keyring::keep_only_seal(conn, keep),
        Mutation::InsertAuditKey(k) => audit::insert_key(conn, k).map(|()| Applied::Done),
        Mutation::InsertAuditCheckpoint(c) => {
            audit::insert_checkpoint(conn, c).map(|()| Applied::Done)
        }
        Mutation::PruneAudit { through } => audit::prune(conn, *through).map(Applied::Pruned),
        Mutation::DeleteOrg { name } => lifecycle::delete_org(conn, name),
        Mutation::DeleteClient { fingerprint, at } => {
            lifecycle::delete_client(conn, fingerprint, *at)
        }
        Mutation::DeleteGroup { org, name } => lifecycle::delete_group(conn, org, name),
        Mutation::RevokeRegistrationTokens { org, hashes } => {
            lifecycle::revoke_tokens(conn, org, hashes)
        }
        Mutation::RecoverAdmin { fingerprint, at } => {
            lifecycle::recover_admin(conn, fingerprint, *at)
        }
        Mutation::BackfillRowMacs { auth, at } => integrity::backfill(conn, &auth.0, *at),
        Mutation::UpsertNode(n) => cluster::upsert_node(conn, n),
        Mutation::RemoveNode { id } => cluster::remove_node(conn, id),
        Mutation::InsertClusterIdentity(r) => cluster::insert_identity(conn, r),
        // Nothing but the change serial, which every change-bearing mutation bumps.
        Mutation::Announce(_) => Ok(Applied::Done),
    }
}

// ---- helpers shared by the aggregate modules ----

/// Integers are stored as SQLite's signed 64-bit; values past `i64::MAX` never occur (they would
/// need 2^63 rotations or versions) and saturate.
pub(super) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn done_or_not_found(rows: usize) -> StoreResult<Applied> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(Applied::Done)
    }
}
