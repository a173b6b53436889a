//! The single writer: takes every queued mutation, applies them in one `BEGIN IMMEDIATE`
//! transaction (each inside its own savepoint, so one failure does not spoil the others), commits
//! once, and only then answers each caller. A caller is never told "done" before the commit.

use super::backend_error;
use keysafe_core::store::{Applied, Mutation, StoreError, StoreResult, WrappedId};
use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

pub(crate) struct Job {
    pub mutation: Mutation,
    pub reply: oneshot::Sender<StoreResult<Applied>>,
}

pub(crate) async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch).await;
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

async fn commit_batch(conn: &mut SqliteConnection, batch: &mut Vec<Job>) {
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
        let r = apply_one(conn, &job.mutation).await;
        let undo = if r.is_err() {
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
        Mutation::InsertClient(c) => {
            sqlx::query(
                "INSERT INTO clients (fingerprint, org, name, state, role, cert_der, created_at, \
                 updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .bind(c.fingerprint.as_str())
            .bind(c.org.as_str())
            .bind(c.name.as_ref().map(|n| n.as_str()))
            .bind(c.state.as_str())
            .bind(c.role.as_str())
            .bind(&c.cert_der)
            .bind(c.created_at.unix_millis())
            .bind(c.updated_at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
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
            version,
        } => {
            let row: Option<(i64, i64)> = sqlx::query_as(
                "SELECT current_version, deleted FROM deposits WHERE owner = ?1 AND name = ?2",
            )
            .bind(key.owner.as_str())
            .bind(key.name.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend_error)?;
            let current = row
                .map(|(v, d)| {
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
            if current_version != *expected_current {
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
                .bind(key.owner.as_str())
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
                .bind(key.owner.as_str())
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
                 kek_version, wrapped_dek, ciphertext) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .bind(key.owner.as_str())
            .bind(key.name.as_str())
            .bind(v)
            .bind(int(meta.size))
            .bind(meta.creator.as_str())
            .bind(at)
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
            .bind(key.owner.as_str())
            .bind(key.name.as_str())
            .bind(i64::from(*deleted))
            .bind(at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(write_error)?;
            not_found_if_none(r.rows_affected())
        }
        Mutation::Purge { key } => {
            let versions =
                sqlx::query("DELETE FROM deposit_versions WHERE owner = ?1 AND name = ?2")
                    .bind(key.owner.as_str())
                    .bind(key.name.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(write_error)?
                    .rows_affected();
            let r = sqlx::query("DELETE FROM deposits WHERE owner = ?1 AND name = ?2")
                .bind(key.owner.as_str())
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
                .bind(key.owner.as_str())
                .bind(key.name.as_str())
                .bind(int(version.get()))
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
            let (used,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM deposit_versions WHERE kek_version = ?1")
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
