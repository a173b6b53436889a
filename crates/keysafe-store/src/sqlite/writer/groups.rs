//! Mutations of groups: creation, members added, admitted (identities wrapped for them) and
//! removed (compare-and-set on the epoch, which opens the next one). Each function is one
//! [`Mutation`](keysafe_core::store::Mutation) and keeps the contract written on its variant.

use super::{done_or_not_found, int, write_error};
use crate::sqlite::backend_error;
use keysafe_core::store::{Applied, StoreError, StoreResult, WrappedKeyRecord};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Timestamp};
use sqlx::SqliteConnection;

/// Bumps a group's `updated_at`. `NotFound`: no such group. `Conflict`: its epoch is not
/// `expected_epoch`.
async fn touch(
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
    member: &ClientFingerprint,
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
    keys: &[WrappedKeyRecord],
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

async fn is_member(
    conn: &mut SqliteConnection,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
) -> StoreResult<bool> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM group_members WHERE org = ?1 AND name = ?2 AND member = ?3")
            .bind(org.as_str())
            .bind(name.as_str())
            .bind(member.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend_error)?;
    Ok(row.is_some())
}

pub(super) async fn create(
    conn: &mut SqliteConnection,
    org: &OrgName,
    name: &GroupName,
    recipient: &str,
    keys: &[WrappedKeyRecord],
    at: Timestamp,
) -> StoreResult<Applied> {
    sqlx::query(
        "INSERT INTO groups (org, name, epoch, created_at, updated_at) VALUES (?1, ?2, 1, ?3, ?3)",
    )
    .bind(org.as_str())
    .bind(name.as_str())
    .bind(at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    insert_epoch(conn, org, name, 1, recipient, at).await?;
    for k in keys {
        insert_member(conn, org, name, &k.member, at).await?;
    }
    insert_keys(conn, org, name, keys).await?;
    Ok(Applied::Done)
}

pub(super) async fn add_member(
    conn: &mut SqliteConnection,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
    at: Timestamp,
) -> StoreResult<Applied> {
    touch(conn, org, name, None, at).await?;
    insert_member(conn, org, name, member, at).await?;
    Ok(Applied::Done)
}

pub(super) async fn admit_member(
    conn: &mut SqliteConnection,
    org: &OrgName,
    name: &GroupName,
    keys: &[WrappedKeyRecord],
    at: Timestamp,
) -> StoreResult<Applied> {
    touch(conn, org, name, None, at).await?;
    for k in keys {
        let r = sqlx::query(
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
        // Nothing inserted: either the identity was there already (kept), or the member is not
        // (or no longer) in the group.
        if r.rows_affected() == 0 && !is_member(conn, org, name, &k.member).await? {
            return Err(StoreError::NotFound);
        }
    }
    Ok(Applied::Done)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn remove_member(
    conn: &mut SqliteConnection,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
    expected_epoch: u64,
    recipient: &str,
    keys: &[WrappedKeyRecord],
    at: Timestamp,
) -> StoreResult<Applied> {
    touch(conn, org, name, Some(expected_epoch), at).await?;
    let r = sqlx::query("DELETE FROM group_members WHERE org = ?1 AND name = ?2 AND member = ?3")
        .bind(org.as_str())
        .bind(name.as_str())
        .bind(member.as_str())
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    done_or_not_found(r.rows_affected())?;
    let epoch = expected_epoch.saturating_add(1);
    sqlx::query("UPDATE groups SET epoch = ?3 WHERE org = ?1 AND name = ?2")
        .bind(org.as_str())
        .bind(name.as_str())
        .bind(int(epoch))
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    insert_epoch(conn, org, name, epoch, recipient, at).await?;
    insert_keys(conn, org, name, keys).await?;
    Ok(Applied::Done)
}
