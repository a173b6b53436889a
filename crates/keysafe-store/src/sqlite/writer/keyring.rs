//! Mutations of the keyring and the secrets it wraps: new versions, re-wrap (compare-and-set on
//! the wrapping version), retirement and the end of a seal migration. Each function is one
//! [`Mutation`](keysafe_core::store::Mutation) and keeps the contract written on its variant.

use super::{done_or_not_found, int};
use crate::sqlite::conn::{exec, one};
use crate::sqlite::rows::at;
use keysafe_core::store::{Applied, KekRecord, StoreError, StoreResult, WrappedId};
use rusqlite::{Connection, params};

fn kek_exists(conn: &Connection, version: u32) -> StoreResult<bool> {
    Ok(one(
        conn,
        "SELECT version FROM keyring WHERE version = ?1 LIMIT 1",
        [i64::from(version)],
        |_| Ok(()),
    )?
    .is_some())
}

/// For a put or an ACL swap: the keyring version a new data key names must exist. If it was
/// retired after the writer read the keyring, the writer retries with the current one.
pub(super) fn require_for_write(conn: &Connection, version: u32) -> StoreResult<()> {
    if kek_exists(conn, version)? {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "keyring version {version} does not exist (retired meanwhile); retry"
        )))
    }
}

pub(super) fn insert_kek(conn: &Connection, k: &KekRecord) -> StoreResult<Applied> {
    exec(
        conn,
        "INSERT INTO keyring (seal, version, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            k.seal,
            i64::from(k.version),
            k.wrapped,
            k.created_at.unix_millis()
        ],
    )?;
    Ok(Applied::Done)
}

pub(super) fn rewrap(
    conn: &Connection,
    id: &WrappedId,
    expected_kek: u32,
    kek_version: u32,
    wrapped: &[u8],
) -> StoreResult<Applied> {
    if !kek_exists(conn, kek_version)? {
        return Err(StoreError::NotFound);
    }
    let exists = match id {
        WrappedId::DepositVersion { key, version, .. } => {
            let (owner, name, v) = (key.owner.stored(), key.name.as_str(), int(version.get()));
            let updated = exec(
                conn,
                "UPDATE deposit_versions SET kek_version = ?4, wrapped_dek = ?5 \
                 WHERE owner = ?1 AND name = ?2 AND version = ?3 AND kek_version = ?6",
                params![
                    owner,
                    name,
                    v,
                    i64::from(kek_version),
                    wrapped,
                    i64::from(expected_kek)
                ],
            )?;
            if updated > 0 {
                return Ok(Applied::Done);
            }
            one(
                conn,
                "SELECT 1 FROM deposit_versions WHERE owner = ?1 AND name = ?2 AND version = ?3",
                params![owner, name, v],
                |_| Ok(()),
            )?
        }
        WrappedId::AuditSigningKey { key_id, .. } => {
            let updated = exec(
                conn,
                "UPDATE audit_signing_keys SET kek_version = ?2, wrapped = ?3 \
                 WHERE key_id = ?1 AND kek_version = ?4",
                params![
                    key_id,
                    i64::from(kek_version),
                    wrapped,
                    i64::from(expected_kek)
                ],
            )?;
            if updated > 0 {
                return Ok(Applied::Done);
            }
            one(
                conn,
                "SELECT 1 FROM audit_signing_keys WHERE key_id = ?1",
                [key_id],
                |_| Ok(()),
            )?
        }
        WrappedId::ClusterTlsKey { fingerprint } => {
            let updated = exec(
                conn,
                "UPDATE cluster_identity SET kek_version = ?2, wrapped_dek = ?3 \
                 WHERE fingerprint = ?1 AND kek_version = ?4",
                params![
                    fingerprint.as_str(),
                    i64::from(kek_version),
                    wrapped,
                    i64::from(expected_kek)
                ],
            )?;
            if updated > 0 {
                return Ok(Applied::Done);
            }
            one(
                conn,
                "SELECT 1 FROM cluster_identity WHERE fingerprint = ?1",
                [fingerprint.as_str()],
                |_| Ok(()),
            )?
        }
    };
    // Nothing replaced: the row is gone, or another version wraps it now.
    match exists {
        None => Err(StoreError::NotFound),
        Some(()) => Err(StoreError::VersionConflict { current: None }),
    }
}

pub(super) fn retire_kek(conn: &Connection, version: u32) -> StoreResult<Applied> {
    let used = one(
        conn,
        "SELECT (SELECT COUNT(*) FROM deposit_versions WHERE kek_version = ?1) + \
             (SELECT COUNT(*) FROM audit_signing_keys WHERE kek_version = ?1) + \
             (SELECT COUNT(*) FROM cluster_identity WHERE kek_version = ?1)",
        [i64::from(version)],
        |r| at::<i64>(r, 0),
    )?
    .unwrap_or(0);
    if used > 0 {
        return Err(StoreError::InUse(format!(
            "{used} data keys are still wrapped by it; wait for the re-wrap to finish"
        )));
    }
    let newest = one(conn, "SELECT MAX(version) FROM keyring", [], |r| {
        at::<Option<i64>>(r, 0)
    })?
    .flatten();
    if newest == Some(i64::from(version)) {
        return Err(StoreError::InUse("it is the current version".into()));
    }
    let n = exec(
        conn,
        "DELETE FROM keyring WHERE version = ?1",
        [i64::from(version)],
    )?;
    done_or_not_found(n)
}

pub(super) fn keep_only_seal(conn: &Connection, keep: &str) -> StoreResult<Applied> {
    let kept = one(
        conn,
        "SELECT COUNT(*) FROM keyring WHERE seal = ?1",
        [keep],
        |r| at::<i64>(r, 0),
    )?
    .unwrap_or(0);
    if kept == 0 {
        return Err(StoreError::NotFound);
    }
    let lost = one(
        conn,
        "SELECT version FROM keyring WHERE version NOT IN \
           (SELECT version FROM keyring WHERE seal = ?1) ORDER BY version LIMIT 1",
        [keep],
        |r| at::<i64>(r, 0),
    )?;
    if let Some(v) = lost {
        return Err(StoreError::InUse(format!(
            "keyring version {v} has no row under the kept seal; deleting the others would lose it"
        )));
    }
    exec(conn, "DELETE FROM keyring WHERE seal != ?1", [keep])?;
    Ok(Applied::Done)
}
