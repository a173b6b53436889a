//! Mutations of the keyring and the secrets it wraps: new versions, re-wrap (compare-and-set on
//! the wrapping version), retirement and the end of a seal migration. Each function is one
//! [`Mutation`](keysafe_core::store::Mutation) and keeps the contract written on its variant.

use super::{done_or_not_found, int, write_error};
use crate::sqlite::backend_error;
use keysafe_core::store::{Applied, KekRecord, StoreError, StoreResult, WrappedId};
use sqlx::SqliteConnection;

async fn kek_exists(conn: &mut SqliteConnection, version: u32) -> StoreResult<bool> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT version FROM keyring WHERE version = ?1 LIMIT 1")
            .bind(i64::from(version))
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend_error)?;
    Ok(row.is_some())
}

/// For a put or an ACL swap: the keyring version a new data key names must exist. If it was
/// retired after the writer read the keyring, the writer retries with the current one.
pub(super) async fn require_for_write(
    conn: &mut SqliteConnection,
    version: u32,
) -> StoreResult<()> {
    if kek_exists(conn, version).await? {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "keyring version {version} does not exist (retired meanwhile); retry"
        )))
    }
}

pub(super) async fn insert_kek(conn: &mut SqliteConnection, k: &KekRecord) -> StoreResult<Applied> {
    sqlx::query("INSERT INTO keyring (seal, version, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)")
        .bind(&k.seal)
        .bind(i64::from(k.version))
        .bind(&k.wrapped)
        .bind(k.created_at.unix_millis())
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    Ok(Applied::Done)
}

pub(super) async fn rewrap(
    conn: &mut SqliteConnection,
    id: &WrappedId,
    expected_kek: u32,
    kek_version: u32,
    wrapped: &[u8],
) -> StoreResult<Applied> {
    if !kek_exists(conn, kek_version).await? {
        return Err(StoreError::NotFound);
    }
    let (update, exists) = match id {
        WrappedId::DepositVersion { key, version, .. } => (
            sqlx::query(
                "UPDATE deposit_versions SET kek_version = ?4, wrapped_dek = ?5 \
                 WHERE owner = ?1 AND name = ?2 AND version = ?3 AND kek_version = ?6",
            )
            .bind(key.owner.stored())
            .bind(key.name.as_str())
            .bind(int(version.get()))
            .bind(i64::from(kek_version))
            .bind(wrapped)
            .bind(i64::from(expected_kek)),
            sqlx::query(
                "SELECT 1 FROM deposit_versions WHERE owner = ?1 AND name = ?2 AND version = ?3",
            )
            .bind(key.owner.stored())
            .bind(key.name.as_str())
            .bind(int(version.get())),
        ),
        WrappedId::AuditSigningKey { key_id, .. } => (
            sqlx::query(
                "UPDATE audit_signing_keys SET kek_version = ?2, wrapped = ?3 \
                 WHERE key_id = ?1 AND kek_version = ?4",
            )
            .bind(key_id.as_str())
            .bind(i64::from(kek_version))
            .bind(wrapped)
            .bind(i64::from(expected_kek)),
            sqlx::query("SELECT 1 FROM audit_signing_keys WHERE key_id = ?1").bind(key_id.as_str()),
        ),
        WrappedId::ClusterTlsKey { fingerprint } => (
            sqlx::query(
                "UPDATE cluster_identity SET kek_version = ?2, wrapped_dek = ?3 \
                 WHERE fingerprint = ?1 AND kek_version = ?4",
            )
            .bind(fingerprint.as_str())
            .bind(i64::from(kek_version))
            .bind(wrapped)
            .bind(i64::from(expected_kek)),
            sqlx::query("SELECT 1 FROM cluster_identity WHERE fingerprint = ?1")
                .bind(fingerprint.as_str()),
        ),
    };
    if update
        .execute(&mut *conn)
        .await
        .map_err(write_error)?
        .rows_affected()
        > 0
    {
        return Ok(Applied::Done);
    }
    // Nothing replaced: the row is gone, or another version wraps it now.
    match exists
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend_error)?
    {
        None => Err(StoreError::NotFound),
        Some(_) => Err(StoreError::VersionConflict { current: None }),
    }
}

pub(super) async fn retire_kek(conn: &mut SqliteConnection, version: u32) -> StoreResult<Applied> {
    let (used,): (i64,) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM deposit_versions WHERE kek_version = ?1) + \
             (SELECT COUNT(*) FROM audit_signing_keys WHERE kek_version = ?1) + \
             (SELECT COUNT(*) FROM cluster_identity WHERE kek_version = ?1)",
    )
    .bind(i64::from(version))
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
    if newest == Some(i64::from(version)) {
        return Err(StoreError::InUse("it is the current version".into()));
    }
    let r = sqlx::query("DELETE FROM keyring WHERE version = ?1")
        .bind(i64::from(version))
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    done_or_not_found(r.rows_affected())
}

pub(super) async fn keep_only_seal(
    conn: &mut SqliteConnection,
    keep: &str,
) -> StoreResult<Applied> {
    let (kept,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM keyring WHERE seal = ?1")
        .bind(keep)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend_error)?;
    if kept == 0 {
        return Err(StoreError::NotFound);
    }
    let lost: Option<(i64,)> = sqlx::query_as(
        "SELECT version FROM keyring WHERE version NOT IN \
           (SELECT version FROM keyring WHERE seal = ?1) ORDER BY version LIMIT 1",
    )
    .bind(keep)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend_error)?;
    if let Some((v,)) = lost {
        return Err(StoreError::InUse(format!(
            "keyring version {v} has no row under the kept seal; deleting the others would lose it"
        )));
    }
    sqlx::query("DELETE FROM keyring WHERE seal != ?1")
        .bind(keep)
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    Ok(Applied::Done)
}
