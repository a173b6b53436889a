//! The single writer: takes every queued mutation, applies them in one `BEGIN IMMEDIATE`
//! transaction (each inside its own savepoint, so one failure does not spoil the others), commits
//! once, and only then answers each caller. A caller is never told "done" before the commit.

use super::audit::{self, Head, SharedHead};
use super::backend_error;
use keysafe_core::store::{Applied, Mutation, StoreError, StoreResult, WrappedId};
use keysafe_proto::audit::AuditEvent;
use keysafe_proto::{GroupName, OrgName, Timestamp};
use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

pub(crate) struct Job {
    pub work: Work,
    pub reply: oneshot::Sender<StoreResult<Applied>>,
}

/// What a job asks for: a change with the audit event of the request that made it (appended in
/// the change's savepoint), or audit events alone (reads and refusals, batched by the server).
// Mutations are moved through the channel as they were before this enum existed; boxing them
// would add an allocation per write for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Work {
    Mutate(Mutation, Option<AuditEvent>),
    Audit(std::sync::Arc<Vec<AuditEvent>>),
}

pub(crate) async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    mut head: Head,
    shared: SharedHead,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch, &mut head).await;
        if let Ok(mut h) = shared.lock() {
            h.clone_from(&head);
        }
    }
    tracing::debug!("sqlite writer stopped");
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> StoreResult<()> {
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(backend_error)
}

impl Work {
    /// Whether this job appends to the audit chain.
    fn appends(&self) -> bool {
        match self {
            Work::Mutate(_, audit) => audit.is_some(),
            Work::Audit(events) => !events.is_empty(),
        }
    }
}

async fn apply_job(
    conn: &mut SqliteConnection,
    work: &Work,
    head: &mut Head,
) -> StoreResult<Applied> {
    match work {
        Work::Mutate(m, audit) => {
            let applied = apply_one(conn, m).await?;
            if let Some(e) = audit {
                audit::append(conn, head, e).await?;
            }
            Ok(applied)
        }
        Work::Audit(events) => {
            audit::append_many(conn, head, events).await?;
            Ok(Applied::Done)
        }
    }
}

/// Commits a batch. `head` moves with each entry appended and is put back when a savepoint or
/// the whole transaction rolls back, so the chain in memory is always the committed one.
async fn commit_batch(conn: &mut SqliteConnection, batch: &mut Vec<Job>, head: &mut Head) {
    // The head in the database, read under the write lock. Ahead of ours: another process
    // appended (several nodes over one file); adopt it. Behind ours, or the same seq with
    // another hash: rows were removed or rewritten under us; refuse to append (the trail fails
    // closed) rather than chain onto an altered log. A restart accepts the database's head,
    // and `audit verify` reports the damage against the signed checkpoints.
    let mut diverged = false;
    match audit::load_head(conn).await {
        Ok(db) if db == *head => {}
        Ok(db) if db.0 > head.0 => *head = db,
        Ok(db) => {
            tracing::error!(
                memory_seq = head.0,
                database_seq = db.0,
                "the audit chain in the database no longer ends where this node left it: \
                 entries were removed or rewritten; refusing to append"
            );
            diverged = true;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the audit chain head");
            diverged = true;
        }
    }
    let start_head = head.clone();
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE").await {
        tracing::error!(error = %e, "cannot begin a write transaction");
        for job in batch.drain(..) {
            let _ = job.reply.send(Err(e.clone()));
        }
        return;
    }
    let mut results = Vec::with_capacity(batch.len());
    let mut fatal = None;
    for job in batch.iter() {
        if let Err(e) = exec(conn, "SAVEPOINT m").await {
            fatal = Some(e);
            break;
        }
        let before = head.clone();
        let r = if diverged && job.work.appends() {
            Err(StoreError::Unavailable(
                "the audit chain was altered under this node".into(),
            ))
        } else {
            apply_job(conn, &job.work, head).await
        };
        let undo = if r.is_err() {
            *head = before;
            exec(conn, "ROLLBACK TO m").await
        } else {
            Ok(())
        };
        if let Err(e) = undo.and(exec(conn, "RELEASE m").await) {
            fatal = Some(e);
            break;
        }
        results.push(r);
    }
    let outcome = match fatal {
        Some(e) => Err(e),
        None => exec(conn, "COMMIT").await,
    };
    match outcome {
        Ok(()) => {
            for (job, r) in batch.drain(..).zip(results) {
                let _ = job.reply.send(r);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "write transaction failed; rolling back the batch");
            *head = start_head;
            let _ = exec(conn, "ROLLBACK").await;
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

fn write_error(e: sqlx::Error) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if db.is_unique_violation() {
            return StoreError::AlreadyExists;
        }
        if db.is_foreign_key_violation() {
            return StoreError::NotFound;
        }
    }
    backend_error(e)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn not_found_if_none(rows: u64) -> StoreResult<Applied> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(Applied::Done)
    }
}

async fn apply_one(conn: &mut SqliteConnection, m: &Mutation) -> StoreResult<Applied> {
    match m {
        Mutation::InsertKek(k) => {
            sqlx::query(
                "INSERT INTO keyring (seal, version, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(&k.seal)
            .bind(i64::from(k.version))
            .bind(&k.wrapped)
            .bind(k.created_at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            Ok(Applied::Done)
        }
        Mutation::CreateOrg(o) => {
            let contacts = serde_json::to_string(&o.contacts)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            sqlx::query(
                "INSERT INTO orgs (name, contacts, auth_mode, auth_hash, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(o.name.as_str())
            .bind(contacts)
            .bind(o.auth_mode.as_str())
            .bind(o.auth_hash.as_deref())
            .bind(o.created_at.unix_millis())
            .bind(o.updated_at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            Ok(Applied::Done)
        }
        Mutation::SetOrgAuth {
            name,
            mode,
            auth_hash,
            at,
        } => {
            let r = sqlx::query(
                "UPDATE orgs SET auth_mode = ?2, auth_hash = ?3, updated_at = ?4 WHERE name = ?1",
            )
            .bind(name.as_str())
            .bind(mode.as_str())
            .bind(auth_hash.as_deref())
            .bind(at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            not_found_if_none(r.rows_affected())
        }
        Mutation::InsertClient {
            client: c,
            consume_token,
        } => {
            if let Some(hash) = consume_token {
                let r = sqlx::query(
                    "UPDATE registration_tokens SET used_at = ?3, used_by = ?4 \
                     WHERE hash = ?1 AND org = ?2 AND used_at IS NULL AND expires_at > ?3",
                )
                .bind(hash)
                .bind(c.org.as_str())
                .bind(c.created_at.unix_millis())
                .bind(c.fingerprint.as_str())
                .execute(&mut *conn)
                .await
                .map_err(write_error)?;
                not_found_if_none(r.rows_affected())?;
            }
            sqlx::query(
                "INSERT INTO clients (fingerprint, org, name, state, role, cert_der, recipient, \
                 token_counter, token_hash, token_recent, token_rotated_at, last_seen_at, \
                 state_reason, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .bind(c.fingerprint.as_str())
            .bind(c.org.as_str())
            .bind(c.name.as_ref().map(|n| n.as_str()))
            .bind(c.state.as_str())
            .bind(c.role.as_str())
            .bind(&c.cert_der)
            .bind(c.recipient.as_deref())
            .bind(int(c.token.counter))
            .bind(c.token.hash.as_deref())
            .bind(recent_json(&c.token.recent)?)
            .bind(c.token.rotated_at.unix_millis())
            .bind(c.last_seen_at.map(|t| t.unix_millis()))
            .bind(c.state_reason.as_deref())
            .bind(c.created_at.unix_millis())
            .bind(c.updated_at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            Ok(Applied::Done)
        }
        Mutation::InsertRegistrationToken(t) => {
            sqlx::query(
                "INSERT INTO registration_tokens (hash, org, created_by, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&t.hash)
            .bind(t.org.as_str())
            .bind(t.created_by.as_str())
            .bind(t.created_at.unix_millis())
            .bind(t.expires_at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            Ok(Applied::Done)
        }
        Mutation::RotateToken {
            fingerprint,
            expected_counter,
            token,
            at,
        } => {
            let r = sqlx::query(
                "UPDATE clients SET token_counter = ?3, token_hash = ?4, token_recent = ?5, \
                 token_rotated_at = ?6, last_seen_at = ?7 \
                 WHERE fingerprint = ?1 AND token_counter = ?2 AND state = 'active'",
            )
            .bind(fingerprint.as_str())
            .bind(int(*expected_counter))
            .bind(int(token.counter))
            .bind(token.hash.as_deref())
            .bind(recent_json(&token.recent)?)
            .bind(token.rotated_at.unix_millis())
            .bind(at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            if r.rows_affected() == 0 {
                return Err(StoreError::Conflict);
            }
            Ok(Applied::Done)
        }
        Mutation::MarkSuspectedClone {
            fingerprint,
            reason,
            at,
        } => {
            let r = sqlx::query(
                "UPDATE clients SET state = 'suspected-clone', state_reason = ?2, updated_at = ?3 \
                 WHERE fingerprint = ?1",
            )
            .bind(fingerprint.as_str())
            .bind(reason)
            .bind(at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            not_found_if_none(r.rows_affected())
        }
        Mutation::ResetToken { fingerprint, at } => {
            let r = sqlx::query(
                "UPDATE clients SET token_hash = NULL, token_recent = '[]', \
                 state = CASE state WHEN 'suspected-clone' THEN 'active' ELSE state END, \
                 state_reason = NULL, updated_at = ?2 WHERE fingerprint = ?1",
            )
            .bind(fingerprint.as_str())
            .bind(at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            not_found_if_none(r.rows_affected())
        }
        Mutation::DisableUnactivated {
            registered_before,
            at,
        } => {
            let rows: Vec<(String,)> = sqlx::query_as(
                "UPDATE clients SET state = 'disabled', \
                 state_reason = 'never used its registration', updated_at = ?2 \
                 WHERE role = 'client' AND state IN ('pending', 'active') \
                   AND last_seen_at IS NULL AND created_at < ?1 RETURNING fingerprint",
            )
            .bind(registered_before.unix_millis())
            .bind(at.unix_millis())
            .fetch_all(&mut *conn)
            .await
            .map_err(write_error)?;
            let fps = rows
                .into_iter()
                .map(|(f,)| {
                    keysafe_proto::ClientFingerprint::parse(&f)
                        .map_err(|_| StoreError::Corrupt("fingerprint".into()))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(Applied::Clients(fps))
        }
        Mutation::CreateGroup {
            org,
            name,
            recipient,
            keys,
            at,
        } => {
            sqlx::query(
                "INSERT INTO groups (org, name, epoch, created_at, updated_at) \
                 VALUES (?1, ?2, 1, ?3, ?3)",
            )
            .bind(org.as_str())
            .bind(name.as_str())
            .bind(at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            insert_epoch(conn, org, name, 1, recipient, *at).await?;
            for k in keys {
                insert_member(conn, org, name, &k.member, *at).await?;
            }
            insert_keys(conn, org, name, keys).await?;
            Ok(Applied::Done)
        }
        Mutation::AddGroupMember {
            org,
            name,
            member,
            at,
        } => {
            touch_group(conn, org, name, None, *at).await?;
            insert_member(conn, org, name, member, *at).await?;
            Ok(Applied::Done)
        }
        Mutation::AdmitGroupMember {
            org,
            name,
            keys,
            at,
        } => {
            touch_group(conn, org, name, None, *at).await?;
            for k in keys {
                sqlx::query(
                    "INSERT INTO group_keys (org, name, epoch, member, wrapped) \
                     SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM group_members \
                       WHERE org = ?1 AND name = ?2 AND member = ?4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(org.as_str())
                .bind(name.as_str())
                .bind(int(k.epoch))
                .bind(k.member.as_str())
                .bind(&k.wrapped)
                .execute(&mut *conn)
                .await
                .map_err(write_error)?;
            }
            Ok(Applied::Done)
        }
        Mutation::RemoveGroupMember {
            org,
            name,
            member,
            expected_epoch,
            recipient,
            keys,
            at,
        } => {
            touch_group(conn, org, name, Some(*expected_epoch), *at).await?;
            let r = sqlx::query(
                "DELETE FROM group_members WHERE org = ?1 AND name = ?2 AND member = ?3",
            )
            .bind(org.as_str())
            .bind(name.as_str())
            .bind(member.as_str())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            not_found_if_none(r.rows_affected())?;
            let epoch = expected_epoch.saturating_add(1);
            sqlx::query("UPDATE groups SET epoch = ?3 WHERE org = ?1 AND name = ?2")
                .bind(org.as_str())
                .bind(name.as_str())
                .bind(int(epoch))
                .execute(&mut *conn)
                .await
                .map_err(write_error)?;
            insert_epoch(conn, org, name, epoch, recipient, *at).await?;
            insert_keys(conn, org, name, keys).await?;
            Ok(Applied::Done)
        }
        Mutation::SetAcl {
            key,
            expected_current,
            expected_acl_serial,
            grants,
            replace,
            at,
        } => {
            let r = sqlx::query(
                "UPDATE deposits SET acl_serial = acl_serial + 1, updated_at = ?5 \
                 WHERE owner = ?1 AND name = ?2 AND current_version = ?3 AND acl_serial = ?4 \
                   AND deleted = 0",
            )
            .bind(key.owner.stored())
            .bind(key.name.as_str())
            .bind(int(expected_current.get()))
            .bind(int(*expected_acl_serial))
            .bind(at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            if r.rows_affected() == 0 {
                return Err(StoreError::Conflict);
            }
            sqlx::query("DELETE FROM deposit_grants WHERE owner = ?1 AND name = ?2")
                .bind(key.owner.stored())
                .bind(key.name.as_str())
                .execute(&mut *conn)
                .await
                .map_err(write_error)?;
            for g in grants {
                sqlx::query(
                    "INSERT INTO deposit_grants (owner, name, grantee, access, granted_by, \
                     granted_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .bind(key.owner.stored())
                .bind(key.name.as_str())
                .bind(g.grantee.stored())
                .bind(g.access.as_str())
                .bind(g.granted_by.as_str())
                .bind(g.granted_at.unix_millis())
                .execute(&mut *conn)
                .await
                .map_err(write_error)?;
            }
            for v in replace {
                // As for PutVersion: never store a data key under a retired keyring version.
                kek_exists(conn, v.kek_version).await?;
                let r = sqlx::query(
                    "UPDATE deposit_versions SET size = ?4, encoding = ?5, kek_version = ?6, \
                     wrapped_dek = ?7, ciphertext = ?8 \
                     WHERE owner = ?1 AND name = ?2 AND version = ?3",
                )
                .bind(key.owner.stored())
                .bind(key.name.as_str())
                .bind(int(v.meta.version.get()))
                .bind(int(v.meta.size))
                .bind(v.meta.encoding.as_str())
                .bind(i64::from(v.kek_version))
                .bind(&v.wrapped_dek)
                .bind(&v.ciphertext)
                .execute(&mut *conn)
                .await
                .map_err(write_error)?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::Conflict);
                }
                if v.meta.version == *expected_current {
                    sqlx::query(
                        "UPDATE deposits SET current_size = ?3 WHERE owner = ?1 AND name = ?2",
                    )
                    .bind(key.owner.stored())
                    .bind(key.name.as_str())
                    .bind(int(v.meta.size))
                    .execute(&mut *conn)
                    .await
                    .map_err(write_error)?;
                }
            }
            Ok(Applied::Done)
        }
        Mutation::SetClientState {
            fingerprint,
            state,
            at,
        } => {
            let r = sqlx::query(
                "UPDATE clients SET state = ?2, updated_at = ?3 WHERE fingerprint = ?1",
            )
            .bind(fingerprint.as_str())
            .bind(state.as_str())
            .bind(at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            not_found_if_none(r.rows_affected())
        }
        Mutation::SetClientRole {
            fingerprint,
            role,
            at,
        } => {
            let r =
                sqlx::query("UPDATE clients SET role = ?2, updated_at = ?3 WHERE fingerprint = ?1")
                    .bind(fingerprint.as_str())
                    .bind(role.as_str())
                    .bind(at.unix_millis())
                    .execute(&mut *conn)
                    .await
                    .map_err(write_error)?;
            not_found_if_none(r.rows_affected())
        }
        Mutation::PutVersion {
            org,
            key,
            expected_current,
            expected_acl_serial,
            version,
        } => {
            let row: Option<(i64, i64, i64)> = sqlx::query_as(
                "SELECT current_version, deleted, acl_serial FROM deposits \
                 WHERE owner = ?1 AND name = ?2",
            )
            .bind(key.owner.stored())
            .bind(key.name.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend_error)?;
            let acl_serial = row.map(|(_, _, a)| a);
            let current = row
                .map(|(v, d, _)| {
                    u64::try_from(v)
                        .ok()
                        .and_then(|v| keysafe_proto::DepositVersion::new(v).ok())
                        .map(|v| (v, d != 0))
                        .ok_or_else(|| StoreError::Corrupt("current_version".into()))
                })
                .transpose()?;
            if current.is_some_and(|(_, deleted)| deleted) {
                return Err(StoreError::Deleted);
            }
            let current_version = current.map(|(v, _)| v);
            let acl_moved = expected_acl_serial
                .is_some_and(|want| acl_serial.is_some_and(|have| have != int(want)));
            if current_version != *expected_current || acl_moved {
                return Err(StoreError::VersionConflict {
                    current: current_version,
                });
            }
            // A data key must name a keyring version that exists (a retire may have raced a put
            // that started before a rotation).
            kek_exists(conn, version.kek_version).await?;
            let meta = &version.meta;
            let v = int(meta.version.get());
            let at = meta.created_at.unix_millis();
            if current_version.is_none() {
                sqlx::query(
                    "INSERT INTO deposits (owner, name, org, current_version, current_size, \
                     deleted, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6)",
                )
                .bind(key.owner.stored())
                .bind(key.name.as_str())
                .bind(org.as_str())
                .bind(v)
                .bind(int(meta.size))
                .bind(at)
                .execute(&mut *conn)
                .await
                .map_err(write_error)?;
            } else {
                sqlx::query(
                    "UPDATE deposits SET current_version = ?3, current_size = ?4, updated_at = ?5 \
                     WHERE owner = ?1 AND name = ?2",
                )
                .bind(key.owner.stored())
                .bind(key.name.as_str())
                .bind(v)
                .bind(int(meta.size))
                .bind(at)
                .execute(&mut *conn)
                .await
                .map_err(write_error)?;
            }
            sqlx::query(
                "INSERT INTO deposit_versions (owner, name, version, size, creator, created_at, \
                 encoding, kek_version, wrapped_dek, ciphertext) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .bind(key.owner.stored())
            .bind(key.name.as_str())
            .bind(v)
            .bind(int(meta.size))
            .bind(meta.creator.as_str())
            .bind(at)
            .bind(meta.encoding.as_str())
            .bind(i64::from(version.kek_version))
            .bind(&version.wrapped_dek)
            .bind(&version.ciphertext)
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            Ok(Applied::Done)
        }
        Mutation::SetDeleted { key, deleted, at } => {
            let r = sqlx::query(
                "UPDATE deposits SET deleted = ?3, updated_at = ?4 WHERE owner = ?1 AND name = ?2",
            )
            .bind(key.owner.stored())
            .bind(key.name.as_str())
            .bind(i64::from(*deleted))
            .bind(at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            not_found_if_none(r.rows_affected())
        }
        Mutation::InsertAuditKey(k) => {
            audit::insert_key(conn, k).await?;
            Ok(Applied::Done)
        }
        Mutation::InsertAuditCheckpoint(c) => {
            audit::insert_checkpoint(conn, c).await?;
            Ok(Applied::Done)
        }
        Mutation::Purge { key } => {
            let versions =
                sqlx::query("DELETE FROM deposit_versions WHERE owner = ?1 AND name = ?2")
                    .bind(key.owner.stored())
                    .bind(key.name.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(write_error)?
                    .rows_affected();
            let r = sqlx::query("DELETE FROM deposits WHERE owner = ?1 AND name = ?2")
                .bind(key.owner.stored())
                .bind(key.name.as_str())
                .execute(&mut *conn)
                .await
                .map_err(write_error)?;
            not_found_if_none(r.rows_affected())?;
            Ok(Applied::Purged(versions))
        }
        // --- Keyring rotation, re-wrap and seal migration (issue 5) ---
        Mutation::Rewrap {
            id,
            expected_kek,
            kek_version,
            wrapped,
        } => {
            kek_exists(conn, *kek_version).await?;
            let r = match id {
                WrappedId::DepositVersion { key, version, .. } => sqlx::query(
                    "UPDATE deposit_versions SET kek_version = ?4, wrapped_dek = ?5 \
                     WHERE owner = ?1 AND name = ?2 AND version = ?3 AND kek_version = ?6",
                )
                .bind(key.owner.stored())
                .bind(key.name.as_str())
                .bind(int(version.get()))
                .bind(i64::from(*kek_version))
                .bind(wrapped)
                .bind(i64::from(*expected_kek))
                .execute(&mut *conn)
                .await
                .map_err(write_error)?,
                WrappedId::AuditSigningKey { key_id, .. } => sqlx::query(
                    "UPDATE audit_signing_keys SET kek_version = ?2, wrapped = ?3 \
                     WHERE key_id = ?1 AND kek_version = ?4",
                )
                .bind(key_id)
                .bind(i64::from(*kek_version))
                .bind(wrapped)
                .bind(i64::from(*expected_kek))
                .execute(&mut *conn)
                .await
                .map_err(write_error)?,
            };
            if r.rows_affected() == 0 {
                return Err(StoreError::VersionConflict { current: None });
            }
            Ok(Applied::Done)
        }
        Mutation::RetireKek { version } => {
            let (used,): (i64,) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM deposit_versions WHERE kek_version = ?1) + \
                     (SELECT COUNT(*) FROM audit_signing_keys WHERE kek_version = ?1)",
            )
            .bind(i64::from(*version))
            .fetch_one(&mut *conn)
            .await
            .map_err(backend_error)?;
            if used > 0 {
                return Err(StoreError::InUse(format!(
                    "{used} data keys are still wrapped by it; wait for the re-wrap to finish"
                )));
            }
            let (newest,): (Option<i64>,) = sqlx::query_as("SELECT MAX(version) FROM keyring")
                .fetch_one(&mut *conn)
                .await
                .map_err(backend_error)?;
            if newest == Some(i64::from(*version)) {
                return Err(StoreError::InUse("it is the current version".into()));
            }
            let r = sqlx::query("DELETE FROM keyring WHERE version = ?1")
                .bind(i64::from(*version))
                .execute(&mut *conn)
                .await
                .map_err(write_error)?;
            not_found_if_none(r.rows_affected())
        }
        Mutation::KeepOnlySeal { keep } => {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM keyring WHERE seal = ?1")
                .bind(keep)
                .fetch_one(&mut *conn)
                .await
                .map_err(backend_error)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query("DELETE FROM keyring WHERE seal != ?1")
                .bind(keep)
                .execute(&mut *conn)
                .await
                .map_err(write_error)?;
            Ok(Applied::Done)
        }
    }
}

async fn kek_exists(conn: &mut SqliteConnection, version: u32) -> StoreResult<()> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT version FROM keyring WHERE version = ?1 LIMIT 1")
            .bind(i64::from(version))
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend_error)?;
    match row {
        Some(_) => Ok(()),
        None => Err(StoreError::Unavailable(format!(
            "keyring version {version} does not exist (retired meanwhile); retry"
        ))),
    }
}

fn recent_json(r: &[keysafe_core::store::ReplacedToken]) -> StoreResult<String> {
    serde_json::to_string(r).map_err(|e| StoreError::Backend(e.to_string()))
}

/// Bumps a group's `updated_at`; `NotFound` if it does not exist, `Conflict` if its epoch is not
/// `expected_epoch`.
async fn touch_group(
    conn: &mut SqliteConnection,
    org: &OrgName,
    name: &GroupName,
    expected_epoch: Option<u64>,
    at: Timestamp,
) -> StoreResult<()> {
    let epoch: Option<(i64,)> =
        sqlx::query_as("SELECT epoch FROM groups WHERE org = ?1 AND name = ?2")
            .bind(org.as_str())
            .bind(name.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend_error)?;
    let Some((epoch,)) = epoch else {
        return Err(StoreError::NotFound);
    };
    if expected_epoch.is_some_and(|e| int(e) != epoch) {
        return Err(StoreError::Conflict);
    }
    sqlx::query("UPDATE groups SET updated_at = ?3 WHERE org = ?1 AND name = ?2")
        .bind(org.as_str())
        .bind(name.as_str())
        .bind(at.unix_millis())
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    Ok(())
}

async fn insert_epoch(
    conn: &mut SqliteConnection,
    org: &OrgName,
    name: &GroupName,
    epoch: u64,
    recipient: &str,
    at: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO group_epochs (org, name, epoch, recipient, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(org.as_str())
    .bind(name.as_str())
    .bind(int(epoch))
    .bind(recipient)
    .bind(at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    Ok(())
}

async fn insert_member(
    conn: &mut SqliteConnection,
    org: &OrgName,
    name: &GroupName,
    member: &keysafe_proto::ClientFingerprint,
    at: Timestamp,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO group_members (org, name, member, added_at) VALUES (?1, ?2, ?3, ?4)")
        .bind(org.as_str())
        .bind(name.as_str())
        .bind(member.as_str())
        .bind(at.unix_millis())
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    Ok(())
}

async fn insert_keys(
    conn: &mut SqliteConnection,
    org: &OrgName,
    name: &GroupName,
    keys: &[keysafe_core::store::WrappedKeyRecord],
) -> StoreResult<()> {
    for k in keys {
        sqlx::query(
            "INSERT INTO group_keys (org, name, epoch, member, wrapped) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(org.as_str())
        .bind(name.as_str())
        .bind(int(k.epoch))
        .bind(k.member.as_str())
        .bind(&k.wrapped)
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    }
    Ok(())
}
