//! Mutations of groups: creation, members added, admitted (identities wrapped for them) and
//! removed (compare-and-set on the epoch, which opens the next one). Each function is one
//! [`Mutation`](keysafe_core::store::Mutation) and keeps the contract written on its variant.

use super::{done_or_not_found, int};
use crate::sqlite::conn::{exec, one};
use crate::sqlite::rows::at;
use keysafe_core::store::{Applied, StoreError, StoreResult, WrappedKeyRecord};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Timestamp};
use rusqlite::{Connection, params};

/// Bumps a group's `updated_at`. `NotFound`: no such group. `Conflict`: its epoch is not
/// `expected_epoch`.
fn touch(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    expected_epoch: Option<u64>,
    at_time: Timestamp,
) -> StoreResult<()> {
    let epoch = one(
        conn,
        "SELECT epoch FROM groups WHERE org = ?1 AND name = ?2",
        params![org.as_str(), name.as_str()],
        |r| at::<i64>(r, 0),
    )?;
    let Some(epoch) = epoch else {
        return Err(StoreError::NotFound);
    };
    if expected_epoch.is_some_and(|e| int(e) != epoch) {
        return Err(StoreError::Conflict);
    }
    exec(
        conn,
        "UPDATE groups SET updated_at = ?3 WHERE org = ?1 AND name = ?2",
        params![org.as_str(), name.as_str(), at_time.unix_millis()],
    )?;
    Ok(())
}

fn insert_epoch(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    epoch: u64,
    recipient: &str,
    at: Timestamp,
) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO group_epochs (org, name, epoch, recipient, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            org.as_str(),
            name.as_str(),
            int(epoch),
            recipient,
            at.unix_millis()
        ],
    )?;
    Ok(())
}

fn insert_member(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
    at: Timestamp,
) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO group_members (org, name, member, added_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            org.as_str(),
            name.as_str(),
            member.as_str(),
            at.unix_millis()
        ],
    )?;
    Ok(())
}

fn insert_keys(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    keys: &[WrappedKeyRecord],
) -> StoreResult<()> {
    for k in keys {
        exec(
            conn,
            "INSERT INTO group_keys (org, name, epoch, member, wrapped) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                org.as_str(),
                name.as_str(),
                int(k.epoch),
                k.member.as_str(),
                k.wrapped
            ],
        )?;
    }
    Ok(())
}

fn is_member(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
) -> StoreResult<bool> {
    Ok(one(
        conn,
        "SELECT 1 FROM group_members WHERE org = ?1 AND name = ?2 AND member = ?3",
        params![org.as_str(), name.as_str(), member.as_str()],
        |_| Ok(()),
    )?
    .is_some())
}

pub(super) fn create(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    recipient: &str,
    keys: &[WrappedKeyRecord],
    at: Timestamp,
) -> StoreResult<Applied> {
    exec(
        conn,
        "INSERT INTO groups (org, name, epoch, created_at, updated_at) VALUES (?1, ?2, 1, ?3, ?3)",
        params![org.as_str(), name.as_str(), at.unix_millis()],
    )?;
    insert_epoch(conn, org, name, 1, recipient, at)?;
    for k in keys {
        insert_member(conn, org, name, &k.member, at)?;
    }
    insert_keys(conn, org, name, keys)?;
    Ok(Applied::Done)
}

pub(super) fn add_member(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
    at: Timestamp,
) -> StoreResult<Applied> {
    touch(conn, org, name, None, at)?;
    insert_member(conn, org, name, member, at)?;
    Ok(Applied::Done)
}

pub(super) fn admit_member(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    keys: &[WrappedKeyRecord],
    at: Timestamp,
) -> StoreResult<Applied> {
    touch(conn, org, name, None, at)?;
    for k in keys {
        let n = exec(
            conn,
            "INSERT INTO group_keys (org, name, epoch, member, wrapped) \
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM group_members \
               WHERE org = ?1 AND name = ?2 AND member = ?4) \
             ON CONFLICT DO NOTHING",
            params![
                org.as_str(),
                name.as_str(),
                int(k.epoch),
                k.member.as_str(),
                k.wrapped
            ],
        )?;
        // Nothing inserted: either the identity was there already (kept), or the member is not
        // (or no longer) in the group.
        if n == 0 && !is_member(conn, org, name, &k.member)? {
            return Err(StoreError::NotFound);
        }
    }
    Ok(Applied::Done)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn remove_member(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
    expected_epoch: u64,
    recipient: &str,
    keys: &[WrappedKeyRecord],
    at: Timestamp,
) -> StoreResult<Applied> {
    touch(conn, org, name, Some(expected_epoch), at)?;
    let n = exec(
        conn,
        "DELETE FROM group_members WHERE org = ?1 AND name = ?2 AND member = ?3",
        params![org.as_str(), name.as_str(), member.as_str()],
    )?;
    done_or_not_found(n)?;
    let epoch = expected_epoch.saturating_add(1);
    exec(
        conn,
        "UPDATE groups SET epoch = ?3 WHERE org = ?1 AND name = ?2",
        params![org.as_str(), name.as_str(), int(epoch)],
    )?;
    insert_epoch(conn, org, name, epoch, recipient, at)?;
    insert_keys(conn, org, name, keys)?;
    Ok(Applied::Done)
}
