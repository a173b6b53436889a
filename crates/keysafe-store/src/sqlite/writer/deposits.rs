//! Mutations of deposits and their versions: put (compare-and-set on the current version),
//! soft delete and restore, purge. Each function is one
//! [`Mutation`](keysafe_core::store::Mutation) and keeps the contract written on its variant.

use super::{done_or_not_found, int, keyring};
use crate::sqlite::conn::{exec, one};
use crate::sqlite::rows::at;
use keysafe_core::store::{Applied, DepositKey, StoreError, StoreResult, VersionRecord};
use keysafe_proto::{DepositVersion, OrgName, Timestamp};
use rusqlite::{Connection, params};

pub(super) fn put_version(
    conn: &Connection,
    org: &OrgName,
    key: &DepositKey,
    expected_current: Option<DepositVersion>,
    expected_acl_serial: Option<u64>,
    version: &VersionRecord,
) -> StoreResult<Applied> {
    let owner = key.owner.stored();
    let name = key.name.as_str();
    let row = one(
        conn,
        "SELECT current_version, deleted, acl_serial FROM deposits \
         WHERE owner = ?1 AND name = ?2",
        params![owner, name],
        |r| Ok((at::<i64>(r, 0)?, at::<i64>(r, 1)?, at::<i64>(r, 2)?)),
    )?;
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
    keyring::require_for_write(conn, version.kek_version)?;
    let meta = &version.meta;
    let v = int(meta.version.get());
    let at = meta.created_at.unix_millis();
    if current_version.is_none() {
        exec(
            conn,
            "INSERT INTO deposits (owner, name, org, current_version, current_size, \
             deleted, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6)",
            params![owner, name, org.as_str(), v, int(meta.size), at],
        )?;
    } else {
        exec(
            conn,
            "UPDATE deposits SET current_version = ?3, current_size = ?4, updated_at = ?5 \
             WHERE owner = ?1 AND name = ?2",
            params![owner, name, v, int(meta.size), at],
        )?;
    }
    exec(
        conn,
        "INSERT INTO deposit_versions (owner, name, version, size, creator, created_at, \
         encoding, kek_version, wrapped_dek, ciphertext) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            owner,
            name,
            v,
            int(meta.size),
            meta.creator.as_str(),
            at,
            meta.encoding.as_str(),
            i64::from(version.kek_version),
            version.wrapped_dek,
            version.ciphertext
        ],
    )?;
    Ok(Applied::Done)
}

pub(super) fn set_deleted(
    conn: &Connection,
    key: &DepositKey,
    deleted: bool,
    at: Timestamp,
) -> StoreResult<Applied> {
    let n = exec(
        conn,
        "UPDATE deposits SET deleted = ?3, updated_at = ?4 WHERE owner = ?1 AND name = ?2",
        params![
            key.owner.stored(),
            key.name.as_str(),
            i64::from(deleted),
            at.unix_millis()
        ],
    )?;
    done_or_not_found(n)
}

pub(super) fn purge(conn: &Connection, key: &DepositKey) -> StoreResult<Applied> {
    let owner = key.owner.stored();
    // Grants go with the deposit row (ON DELETE CASCADE); versions are counted for the answer.
    let versions = exec(
        conn,
        "DELETE FROM deposit_versions WHERE owner = ?1 AND name = ?2",
        params![owner, key.name.as_str()],
    )?;
    let n = exec(
        conn,
        "DELETE FROM deposits WHERE owner = ?1 AND name = ?2",
        params![owner, key.name.as_str()],
    )?;
    done_or_not_found(n)?;
    Ok(Applied::Purged(versions as u64))
}
