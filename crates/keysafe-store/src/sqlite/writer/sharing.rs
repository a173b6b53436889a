//! The ACL swap: a deposit's grants and its re-encrypted versions replaced together, by
//! compare-and-set on the current version and the ACL serial
//! ([`Mutation::SetAcl`](keysafe_core::store::Mutation::SetAcl)).

use super::{int, keyring, write_error};
use crate::sqlite::backend_error;
use keysafe_core::store::{
    Applied, DepositKey, GrantRecord, StoreError, StoreResult, VersionRecord,
};
use keysafe_proto::{DepositVersion, Timestamp};
use sqlx::SqliteConnection;

/// Why the compare-and-set matched no row: the deposit is missing, deleted, or moved on.
async fn refusal(conn: &mut SqliteConnection, key: &DepositKey) -> StoreResult<StoreError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT deleted FROM deposits WHERE owner = ?1 AND name = ?2")
            .bind(key.owner.stored())
            .bind(key.name.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend_error)?;
    Ok(match row {
        None => StoreError::NotFound,
        Some((deleted,)) if deleted != 0 => StoreError::Deleted,
        Some(_) => StoreError::Conflict,
    })
}

pub(super) async fn set_acl(
    conn: &mut SqliteConnection,
    key: &DepositKey,
    expected_current: DepositVersion,
    expected_acl_serial: u64,
    grants: &[GrantRecord],
    replace: &[VersionRecord],
    at: Timestamp,
) -> StoreResult<Applied> {
    let r = sqlx::query(
        "UPDATE deposits SET acl_serial = acl_serial + 1, updated_at = ?5 \
         WHERE owner = ?1 AND name = ?2 AND current_version = ?3 AND acl_serial = ?4 \
           AND deleted = 0",
    )
    .bind(key.owner.stored())
    .bind(key.name.as_str())
    .bind(int(expected_current.get()))
    .bind(int(expected_acl_serial))
    .bind(at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    if r.rows_affected() == 0 {
        return Err(refusal(conn, key).await?);
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
        // As for a put: never store a data key under a retired keyring version.
        keyring::require_for_write(conn, v.kek_version).await?;
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
            return Err(StoreError::NotFound);
        }
        if v.meta.version == expected_current {
            sqlx::query("UPDATE deposits SET current_size = ?3 WHERE owner = ?1 AND name = ?2")
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
