//! Mutations of deposits and their versions: put (compare-and-set on the current version),
//! soft delete and restore, purge. Each function is one
//! [`Mutation`](keysafe_core::store::Mutation) and keeps the contract written on its variant.

use super::{done_or_not_found, int, keyring, write_error};
use crate::sqlite::backend_error;
use keysafe_core::store::{Applied, DepositKey, StoreError, StoreResult, VersionRecord};
use keysafe_proto::{DepositVersion, OrgName, Timestamp};
use sqlx::SqliteConnection;

pub(super) async fn put_version(
    conn: &mut SqliteConnection,
    org: &OrgName,
    key: &DepositKey,
    expected_current: Option<DepositVersion>,
    expected_acl_serial: Option<u64>,
    version: &VersionRecord,
) -> StoreResult<Applied> {
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
                .and_then(|v| DepositVersion::new(v).ok())
                .map(|v| (v, d != 0))
                .ok_or_else(|| StoreError::Corrupt("current_version".into()))
        })
        .transpose()?;
    if current.is_some_and(|(_, deleted)| deleted) {
        return Err(StoreError::Deleted);
    }
    let current_version = current.map(|(v, _)| v);
    let acl_moved =
        expected_acl_serial.is_some_and(|want| acl_serial.is_some_and(|have| have != int(want)));
    if current_version != expected_current || acl_moved {
        return Err(StoreError::VersionConflict {
            current: current_version,
        });
    }
    // A data key must name a keyring version that exists (a retire may have raced a put that
    // started before a rotation).
    keyring::require_for_write(conn, version.kek_version).await?;
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

pub(super) async fn set_deleted(
    conn: &mut SqliteConnection,
    key: &DepositKey,
    deleted: bool,
    at: Timestamp,
) -> StoreResult<Applied> {
    let r = sqlx::query(
        "UPDATE deposits SET deleted = ?3, updated_at = ?4 WHERE owner = ?1 AND name = ?2",
    )
    .bind(key.owner.stored())
    .bind(key.name.as_str())
    .bind(i64::from(deleted))
    .bind(at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    done_or_not_found(r.rows_affected())
}

pub(super) async fn purge(conn: &mut SqliteConnection, key: &DepositKey) -> StoreResult<Applied> {
    // Grants go with the deposit row (ON DELETE CASCADE); versions are counted for the answer.
    let versions = sqlx::query("DELETE FROM deposit_versions WHERE owner = ?1 AND name = ?2")
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
    done_or_not_found(r.rows_affected())?;
    Ok(Applied::Purged(versions))
}
