//! Keyring rows and the secrets they wrap: insert, re-wrap by compare-and-set on the wrapping
//! version, retire, and the end of a seal migration.

use super::{exec, kek_row_exists, not_found_if_none, query_opt};
use crate::postgres::rows::int;
use crate::postgres::writer::{Tx, TxResult};
use keysafe_core::store::{Applied, KekRecord, StoreError, WrappedId};

pub(super) async fn insert_kek(tx: &Tx<'_>, k: &KekRecord) -> TxResult<Applied> {
    exec(
        tx,
        "INSERT INTO keyring (seal, version, wrapped, created_at) VALUES ($1, $2, $3, $4)",
        &[
            &k.seal,
            &i64::from(k.version),
            &k.wrapped,
            &k.created_at.unix_millis(),
        ],
    )
    .await?;
    Ok(Applied::Done)
}

/// Replaces one wrapped secret if it is still wrapped by `expected_kek`. `NotFound` when
/// `kek_version` names no keyring row or the row is gone; `VersionConflict { current: None }`
/// when the row exists but another version wraps it now.
pub(super) async fn rewrap(
    tx: &Tx<'_>,
    id: &WrappedId,
    expected_kek: u32,
    kek_version: u32,
    wrapped: &[u8],
) -> TxResult<Applied> {
    if !kek_row_exists(tx, kek_version).await? {
        return Err(StoreError::NotFound.into());
    }
    let (updated, exists) = match id {
        WrappedId::DepositVersion { key, version, .. } => {
            let owner = key.owner.stored();
            let v = int(version.get());
            let n = exec(
                tx,
                "UPDATE deposit_versions SET kek_version = $4, wrapped_dek = $5 \
                 WHERE owner = $1 AND name = $2 AND version = $3 AND kek_version = $6",
                &[
                    &owner,
                    &key.name.as_str(),
                    &v,
                    &i64::from(kek_version),
                    &wrapped,
                    &i64::from(expected_kek),
                ],
            )
            .await?;
            let exists = n > 0
                || query_opt(
                    tx,
                    "SELECT 1 FROM deposit_versions WHERE owner = $1 AND name = $2 \
                     AND version = $3",
                    &[&owner, &key.name.as_str(), &v],
                )
                .await?
                .is_some();
            (n, exists)
        }
        WrappedId::AuditSigningKey { key_id, .. } => {
            let n = exec(
                tx,
                "UPDATE audit_signing_keys SET kek_version = $2, wrapped = $3 \
                 WHERE key_id = $1 AND kek_version = $4",
                &[
                    key_id,
                    &i64::from(kek_version),
                    &wrapped,
                    &i64::from(expected_kek),
                ],
            )
            .await?;
            let exists = n > 0
                || query_opt(
                    tx,
                    "SELECT 1 FROM audit_signing_keys WHERE key_id = $1",
                    &[key_id],
                )
                .await?
                .is_some();
            (n, exists)
        }
        WrappedId::ClusterTlsKey { fingerprint } => {
            let n = exec(
                tx,
                "UPDATE cluster_identity SET kek_version = $2, wrapped_dek = $3 \
                 WHERE fingerprint = $1 AND kek_version = $4",
                &[
                    &fingerprint.as_str(),
                    &i64::from(kek_version),
                    &wrapped,
                    &i64::from(expected_kek),
                ],
            )
            .await?;
            let exists = n > 0
                || query_opt(
                    tx,
                    "SELECT 1 FROM cluster_identity WHERE fingerprint = $1",
                    &[&fingerprint.as_str()],
                )
                .await?
                .is_some();
            (n, exists)
        }
    };
    match (updated, exists) {
        (0, true) => Err(StoreError::VersionConflict { current: None }.into()),
        (0, false) => Err(StoreError::NotFound.into()),
        _ => Ok(Applied::Done),
    }
}

/// Deletes a keyring version under every seal: refused (`InUse`) while a wrapped row uses it
/// or when it is the newest version.
pub(super) async fn retire_kek(tx: &Tx<'_>, version: u32) -> TxResult<Applied> {
    let v = i64::from(version);
    let row = query_opt(
        tx,
        "SELECT (SELECT COUNT(*) FROM deposit_versions WHERE kek_version = $1) + \
                (SELECT COUNT(*) FROM audit_signing_keys WHERE kek_version = $1) + \
                (SELECT COUNT(*) FROM cluster_identity WHERE kek_version = $1) AS used, \
                (SELECT MAX(version) FROM keyring) AS newest",
        &[&v],
    )
    .await?
    .ok_or_else(|| StoreError::Backend("usage count returned no row".into()))?;
    let used: i64 = row.try_get("used")?;
    let newest: Option<i64> = row.try_get("newest")?;
    if used > 0 {
        return Err(StoreError::InUse(format!(
            "{used} data keys are still wrapped by it; wait for the re-wrap to finish"
        ))
        .into());
    }
    if newest == Some(v) {
        return Err(StoreError::InUse("it is the current version".into()).into());
    }
    let n = exec(tx, "DELETE FROM keyring WHERE version = $1", &[&v]).await?;
    not_found_if_none(n)
}

/// Deletes every keyring row of other seals; `NotFound` (and nothing deleted) when no row of
/// `keep` exists, so the keyring can never be emptied; `InUse` when some version has no row
/// under `keep`, so no version is ever lost. The kept rows are share-locked until commit.
pub(super) async fn keep_only_seal(tx: &Tx<'_>, keep: &str) -> TxResult<Applied> {
    let row = query_opt(
        tx,
        "SELECT 1 FROM keyring WHERE seal = $1 LIMIT 1 FOR SHARE",
        &[&keep],
    )
    .await?;
    if row.is_none() {
        return Err(StoreError::NotFound.into());
    }
    let lost = query_opt(
        tx,
        "SELECT version FROM keyring WHERE version NOT IN \
           (SELECT version FROM keyring WHERE seal = $1) ORDER BY version LIMIT 1",
        &[&keep],
    )
    .await?;
    if let Some(r) = lost {
        let v: i64 = r.try_get("version")?;
        return Err(StoreError::InUse(format!(
            "keyring version {v} has no row under the kept seal; deleting the others would lose it"
        ))
        .into());
    }
    exec(tx, "DELETE FROM keyring WHERE seal <> $1", &[&keep]).await?;
    Ok(Applied::Done)
}
