//! The ACL swap: a deposit's grants and its re-encrypted versions replaced together, by
//! compare-and-set on the current version and the ACL serial
//! ([`Mutation::SetAcl`](keysafe_core::store::Mutation::SetAcl)).

use super::{int, keyring};
use crate::sqlite::conn::{exec, one};
use crate::sqlite::rows::at;
use keysafe_core::store::{
    Applied, DepositKey, GrantRecord, StoreError, StoreResult, VersionRecord,
};
use keysafe_proto::{DepositVersion, Timestamp};
use rusqlite::{Connection, params};

/// Why the compare-and-set matched no row: the deposit is missing, deleted, or moved on.
fn refusal(conn: &Connection, key: &DepositKey) -> StoreResult<StoreError> {
    let row = one(
        conn,
        "SELECT deleted FROM deposits WHERE owner = ?1 AND name = ?2",
        params![key.owner.stored(), key.name.as_str()],
        |r| at::<i64>(r, 0),
    )?;
    Ok(match row {
        None => StoreError::NotFound,
        Some(deleted) if deleted != 0 => StoreError::Deleted,
        Some(_) => StoreError::Conflict,
    })
}

pub(super) fn set_acl(
    conn: &Connection,
    key: &DepositKey,
    expected_current: DepositVersion,
    expected_acl_serial: u64,
    grants: &[GrantRecord],
    replace: &[VersionRecord],
    at: Timestamp,
) -> StoreResult<Applied> {
    let owner = key.owner.stored();
    let name = key.name.as_str();
    let n = exec(
        conn,
        "UPDATE deposits SET acl_serial = acl_serial + 1, updated_at = ?5 \
         WHERE owner = ?1 AND name = ?2 AND current_version = ?3 AND acl_serial = ?4 \
           AND deleted = 0",
        params![
            owner,
            name,
            int(expected_current.get()),
            int(expected_acl_serial),
            at.unix_millis()
        ],
    )?;
    if n == 0 {
        return Err(refusal(conn, key)?);
    }
    exec(
        conn,
        "DELETE FROM deposit_grants WHERE owner = ?1 AND name = ?2",
        params![owner, name],
    )?;
    for g in grants {
        exec(
            conn,
            "INSERT INTO deposit_grants (owner, name, grantee, access, granted_by, \
             granted_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                owner,
                name,
                g.grantee.stored(),
                g.access.as_str(),
                g.granted_by.as_str(),
                g.granted_at.unix_millis()
            ],
        )?;
    }
    for v in replace {
        // As for a put: never store a data key under a retired keyring version.
        keyring::require_for_write(conn, v.kek_version)?;
        let n = exec(
            conn,
            "UPDATE deposit_versions SET size = ?4, encoding = ?5, kek_version = ?6, \
             wrapped_dek = ?7, ciphertext = ?8 \
             WHERE owner = ?1 AND name = ?2 AND version = ?3",
            params![
                owner,
                name,
                int(v.meta.version.get()),
                int(v.meta.size),
                v.meta.encoding.as_str(),
                i64::from(v.kek_version),
                v.wrapped_dek,
                v.ciphertext
            ],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        if v.meta.version == expected_current {
            exec(
                conn,
                "UPDATE deposits SET current_size = ?3 WHERE owner = ?1 AND name = ?2",
                params![owner, name, int(v.meta.size)],
            )?;
        }
    }
    Ok(Applied::Done)
}
