//! Deposits: versions added by compare-and-set on the current version (and optionally the ACL
//! serial), the ACL swap with its re-encrypted versions, soft delete and purge.

use super::{exec, kek_exists, not_found_if_none, query_opt};
use crate::postgres::rows::{corrupt, int};
use crate::postgres::writer::{Tx, TxResult};
use keysafe_core::store::{Applied, DepositKey, GrantRecord, StoreError, VersionRecord};
use keysafe_proto::{DepositVersion, OrgName, Timestamp};

/// Adds a version if the current one is still `expected_current` (`None`: no such deposit).
/// The header row is locked while it is checked, so a concurrent put waits, re-reads, and
/// answers `VersionConflict`.
pub(super) async fn put_version(
    tx: &Tx<'_>,
    org: &OrgName,
    key: &DepositKey,
    expected_current: Option<DepositVersion>,
    expected_acl_serial: Option<u64>,
    version: &VersionRecord,
) -> TxResult<Applied> {
    let owner = key.owner.stored();
    let row = query_opt(
        tx,
        "SELECT current_version, deleted, acl_serial FROM deposits \
         WHERE owner = $1 AND name = $2 FOR UPDATE",
        &[&owner, &key.name.as_str()],
    )
    .await?;
    let current = match &row {
        None => None,
        Some(r) => {
            let v: i64 = r.try_get("current_version")?;
            let deleted: bool = r.try_get("deleted")?;
            let acl: i64 = r.try_get("acl_serial")?;
            let v = u64::try_from(v)
                .ok()
                .and_then(|v| DepositVersion::new(v).ok())
                .ok_or_else(|| corrupt("current_version"))?;
            Some((v, deleted, acl))
        }
    };
    if current.is_some_and(|(_, deleted, _)| deleted) {
        return Err(StoreError::Deleted.into());
    }
    let current_version = current.map(|(v, _, _)| v);
    let acl_moved = expected_acl_serial
        .is_some_and(|want| current.is_some_and(|(_, _, have)| have != int(want)));
    if current_version != expected_current || acl_moved {
        return Err(StoreError::VersionConflict {
            current: current_version,
        }
        .into());
    }
    kek_exists(tx, version.kek_version).await?;
    let meta = &version.meta;
    let v = int(meta.version.get());
    let at = meta.created_at.unix_millis();
    if current_version.is_none() {
        exec(
            tx,
            "INSERT INTO deposits (owner, name, org, current_version, current_size, deleted, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, FALSE, $6, $6)",
            &[
                &owner,
                &key.name.as_str(),
                &org.as_str(),
                &v,
                &int(meta.size),
                &at,
            ],
        )
        .await?;
    } else {
        exec(
            tx,
            "UPDATE deposits SET current_version = $3, current_size = $4, updated_at = $5 \
             WHERE owner = $1 AND name = $2",
            &[&owner, &key.name.as_str(), &v, &int(meta.size), &at],
        )
        .await?;
    }
    exec(
        tx,
        "INSERT INTO deposit_versions (owner, name, version, size, creator, created_at, \
         encoding, kek_version, wrapped_dek, ciphertext) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &owner,
            &key.name.as_str(),
            &v,
            &int(meta.size),
            &meta.creator.as_str(),
            &at,
            &meta.encoding.as_str(),
            &i64::from(version.kek_version),
            &version.wrapped_dek,
            &version.ciphertext,
        ],
    )
    .await?;
    Ok(Applied::Done)
}

/// Swaps the ACL and the re-encrypted versions, if the current version and ACL serial are still
/// the expected ones (a conditional UPDATE bumps the serial first, so of two concurrent swaps
/// from the same state only one matches).
pub(super) async fn set_acl(
    tx: &Tx<'_>,
    key: &DepositKey,
    expected_current: DepositVersion,
    expected_acl_serial: u64,
    grants: &[GrantRecord],
    replace: &[VersionRecord],
    at: Timestamp,
) -> TxResult<Applied> {
    let owner = key.owner.stored();
    let name = key.name.as_str();
    let n = exec(
        tx,
        "UPDATE deposits SET acl_serial = acl_serial + 1, updated_at = $5 \
         WHERE owner = $1 AND name = $2 AND current_version = $3 AND acl_serial = $4 \
           AND NOT deleted",
        &[
            &owner,
            &name,
            &int(expected_current.get()),
            &int(expected_acl_serial),
            &at.unix_millis(),
        ],
    )
    .await?;
    if n == 0 {
        return Err(acl_refusal(tx, key).await?.into());
    }
    exec(
        tx,
        "DELETE FROM deposit_grants WHERE owner = $1 AND name = $2",
        &[&owner, &name],
    )
    .await?;
    for g in grants {
        exec(
            tx,
            "INSERT INTO deposit_grants (owner, name, grantee, access, granted_by, granted_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &owner,
                &name,
                &g.grantee.stored(),
                &g.access.as_str(),
                &g.granted_by.as_str(),
                &g.granted_at.unix_millis(),
            ],
        )
        .await?;
    }
    for v in replace {
        // As for a put: never store a data key under a retired keyring version.
        kek_exists(tx, v.kek_version).await?;
        let n = exec(
            tx,
            "UPDATE deposit_versions SET size = $4, encoding = $5, kek_version = $6, \
             wrapped_dek = $7, ciphertext = $8 \
             WHERE owner = $1 AND name = $2 AND version = $3",
            &[
                &owner,
                &name,
                &int(v.meta.version.get()),
                &int(v.meta.size),
                &v.meta.encoding.as_str(),
                &i64::from(v.kek_version),
                &v.wrapped_dek,
                &v.ciphertext,
            ],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::NotFound.into());
        }
        if v.meta.version == expected_current {
            exec(
                tx,
                "UPDATE deposits SET current_size = $3 WHERE owner = $1 AND name = $2",
                &[&owner, &name, &int(v.meta.size)],
            )
            .await?;
        }
    }
    Ok(Applied::Done)
}

/// Why the ACL compare-and-set matched no row: the deposit is missing, deleted, or moved on.
async fn acl_refusal(tx: &Tx<'_>, key: &DepositKey) -> TxResult<StoreError> {
    let row = query_opt(
        tx,
        "SELECT deleted FROM deposits WHERE owner = $1 AND name = $2",
        &[&key.owner.stored(), &key.name.as_str()],
    )
    .await?;
    Ok(match row {
        None => StoreError::NotFound,
        Some(r) if r.try_get::<_, bool>("deleted")? => StoreError::Deleted,
        Some(_) => StoreError::Conflict,
    })
}

pub(super) async fn set_deleted(
    tx: &Tx<'_>,
    key: &DepositKey,
    deleted: bool,
    at: Timestamp,
) -> TxResult<Applied> {
    let n = exec(
        tx,
        "UPDATE deposits SET deleted = $3, updated_at = $4 WHERE owner = $1 AND name = $2",
        &[
            &key.owner.stored(),
            &key.name.as_str(),
            &deleted,
            &at.unix_millis(),
        ],
    )
    .await?;
    not_found_if_none(n)
}

/// Removes the deposit, its versions and its grants; answers how many versions went.
pub(super) async fn purge(tx: &Tx<'_>, key: &DepositKey) -> TxResult<Applied> {
    let owner = key.owner.stored();
    let versions = exec(
        tx,
        "DELETE FROM deposit_versions WHERE owner = $1 AND name = $2",
        &[&owner, &key.name.as_str()],
    )
    .await?;
    let n = exec(
        tx,
        "DELETE FROM deposits WHERE owner = $1 AND name = $2",
        &[&owner, &key.name.as_str()],
    )
    .await?;
    not_found_if_none(n)?;
    Ok(Applied::Purged(versions))
}
