//! Groups: creation at epoch 1, members, wrapped identities, and member removal, which opens
//! the next epoch only if the epoch the caller saw is still current.

use super::{exec, not_found_if_none, query_opt};
use crate::postgres::rows::int;
use crate::postgres::writer::{Tx, TxResult};
use keysafe_core::store::{Applied, StoreError, WrappedKeyRecord};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Timestamp};

pub(super) async fn create_group(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
    recipient: &str,
    keys: &[WrappedKeyRecord],
    at: Timestamp,
) -> TxResult<Applied> {
    exec(
        tx,
        "INSERT INTO groups (org, name, epoch, created_at, updated_at) VALUES ($1, $2, 1, $3, $3)",
        &[&org.as_str(), &name.as_str(), &at.unix_millis()],
    )
    .await?;
    insert_epoch(tx, org, name, 1, recipient, at).await?;
    for k in keys {
        insert_member(tx, org, name, &k.member, at).await?;
    }
    insert_keys(tx, org, name, keys).await?;
    Ok(Applied::Done)
}

pub(super) async fn add_member(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
    at: Timestamp,
) -> TxResult<Applied> {
    touch_group(tx, org, name, None, at).await?;
    insert_member(tx, org, name, member, at).await?;
    Ok(Applied::Done)
}

/// Stores identities wrapped for members of the group; keys it has are kept. A key for a
/// client that is not a member is `NotFound` (so is one for an epoch that does not exist: the
/// reference fails).
pub(super) async fn admit_member(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
    keys: &[WrappedKeyRecord],
    at: Timestamp,
) -> TxResult<Applied> {
    touch_group(tx, org, name, None, at).await?;
    for k in keys {
        let n = exec(
            tx,
            "INSERT INTO group_keys (org, name, epoch, member, wrapped) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM group_members \
               WHERE org = $1 AND name = $2 AND member = $4) \
             ON CONFLICT DO NOTHING",
            &[
                &org.as_str(),
                &name.as_str(),
                &int(k.epoch),
                &k.member.as_str(),
                &k.wrapped,
            ],
        )
        .await?;
        // Nothing inserted: the identity was there already (kept), or the client is not (or
        // no longer) a member.
        if n == 0 && !is_member(tx, org, name, &k.member).await? {
            return Err(StoreError::NotFound.into());
        }
    }
    Ok(Applied::Done)
}

async fn is_member(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
) -> TxResult<bool> {
    Ok(query_opt(
        tx,
        "SELECT 1 FROM group_members WHERE org = $1 AND name = $2 AND member = $3",
        &[&org.as_str(), &name.as_str(), &member.as_str()],
    )
    .await?
    .is_some())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn remove_member(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
    expected_epoch: u64,
    recipient: &str,
    keys: &[WrappedKeyRecord],
    at: Timestamp,
) -> TxResult<Applied> {
    touch_group(tx, org, name, Some(expected_epoch), at).await?;
    let n = exec(
        tx,
        "DELETE FROM group_members WHERE org = $1 AND name = $2 AND member = $3",
        &[&org.as_str(), &name.as_str(), &member.as_str()],
    )
    .await?;
    not_found_if_none(n)?;
    let epoch = expected_epoch.saturating_add(1);
    exec(
        tx,
        "UPDATE groups SET epoch = $3 WHERE org = $1 AND name = $2",
        &[&org.as_str(), &name.as_str(), &int(epoch)],
    )
    .await?;
    insert_epoch(tx, org, name, epoch, recipient, at).await?;
    insert_keys(tx, org, name, keys).await?;
    Ok(Applied::Done)
}

/// Locks the group's row and bumps its `updated_at`; `NotFound` if it does not exist,
/// `Conflict` if its epoch is not `expected_epoch`.
async fn touch_group(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
    expected_epoch: Option<u64>,
    at: Timestamp,
) -> TxResult<()> {
    let row = query_opt(
        tx,
        "SELECT epoch FROM groups WHERE org = $1 AND name = $2 FOR UPDATE",
        &[&org.as_str(), &name.as_str()],
    )
    .await?;
    let Some(row) = row else {
        return Err(StoreError::NotFound.into());
    };
    let epoch: i64 = row.try_get(0)?;
    if expected_epoch.is_some_and(|e| int(e) != epoch) {
        return Err(StoreError::Conflict.into());
    }
    exec(
        tx,
        "UPDATE groups SET updated_at = $3 WHERE org = $1 AND name = $2",
        &[&org.as_str(), &name.as_str(), &at.unix_millis()],
    )
    .await?;
    Ok(())
}

async fn insert_epoch(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
    epoch: u64,
    recipient: &str,
    at: Timestamp,
) -> TxResult<()> {
    exec(
        tx,
        "INSERT INTO group_epochs (org, name, epoch, recipient, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &org.as_str(),
            &name.as_str(),
            &int(epoch),
            &recipient,
            &at.unix_millis(),
        ],
    )
    .await?;
    Ok(())
}

async fn insert_member(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
    at: Timestamp,
) -> TxResult<()> {
    exec(
        tx,
        "INSERT INTO group_members (org, name, member, added_at) VALUES ($1, $2, $3, $4)",
        &[
            &org.as_str(),
            &name.as_str(),
            &member.as_str(),
            &at.unix_millis(),
        ],
    )
    .await?;
    Ok(())
}

async fn insert_keys(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
    keys: &[WrappedKeyRecord],
) -> TxResult<()> {
    for k in keys {
        exec(
            tx,
            "INSERT INTO group_keys (org, name, epoch, member, wrapped) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &org.as_str(),
                &name.as_str(),
                &int(k.epoch),
                &k.member.as_str(),
                &k.wrapped,
            ],
        )
        .await?;
    }
    Ok(())
}
