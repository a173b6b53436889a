//! The end-of-life mutations on PostgreSQL: deleting organisations, clients and groups,
//! revoking registration tokens, and the offline recovery of an administrator. Each decides
//! with the same dependents queries as the preview (`postgres/lifecycle.rs`), here inside the
//! write transaction after the audit head lock (so no other keysafe writer runs meanwhile),
//! and removes what only the deleted record held in the same savepoint.

use super::{exec, not_found_if_none, query_opt};
use crate::postgres::lifecycle::{client_dependents, group_dependents, org_dependents};
use crate::postgres::writer::{Tx, TxResult};
use keysafe_core::store::{Applied, StoreError, refusal};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Timestamp};

fn in_use(blockers: Vec<String>) -> TxResult<()> {
    if blockers.is_empty() {
        Ok(())
    } else {
        Err(StoreError::InUse(refusal(&blockers)).into())
    }
}

pub(super) async fn delete_org(tx: &Tx<'_>, name: &OrgName) -> TxResult<Applied> {
    // Locks the row: a client registering into it meanwhile waits, then fails its reference.
    if query_opt(
        tx,
        "SELECT 1 FROM orgs WHERE name = $1 FOR UPDATE",
        &[&name.as_str()],
    )
    .await?
    .is_none()
    {
        return Err(StoreError::NotFound.into());
    }
    let deps = org_dependents(&**tx, name)
        .await?
        .ok_or(StoreError::NotFound)?;
    in_use(deps.blockers())?;
    exec(
        tx,
        "DELETE FROM registration_tokens WHERE org = $1",
        &[&name.as_str()],
    )
    .await?;
    let n = exec(tx, "DELETE FROM orgs WHERE name = $1", &[&name.as_str()]).await?;
    not_found_if_none(n)
}

pub(super) async fn delete_client(
    tx: &Tx<'_>,
    fp: &ClientFingerprint,
    at: Timestamp,
) -> TxResult<Applied> {
    let f = fp.as_str();
    if query_opt(
        tx,
        "SELECT 1 FROM clients WHERE fingerprint = $1 FOR UPDATE",
        &[&f],
    )
    .await?
    .is_none()
    {
        return Err(StoreError::NotFound.into());
    }
    let deps = client_dependents(&**tx, fp)
        .await?
        .ok_or(StoreError::NotFound)?;
    in_use(deps.blockers())?;
    let at = at.unix_millis();
    // Every deposit that granted the client access changes its ACL: a writer that encrypted
    // for the old recipient set must read the ACL again.
    exec(
        tx,
        "UPDATE deposits SET acl_serial = acl_serial + 1, updated_at = $2 \
         WHERE (owner, name) IN (SELECT owner, name FROM deposit_grants WHERE grantee = $1)",
        &[&f, &at],
    )
    .await?;
    exec(tx, "DELETE FROM deposit_grants WHERE grantee = $1", &[&f]).await?;
    exec(
        tx,
        "UPDATE groups SET updated_at = $2 \
         WHERE (org, name) IN (SELECT org, name FROM group_members WHERE member = $1)",
        &[&f, &at],
    )
    .await?;
    exec(
        tx,
        "DELETE FROM group_keys WHERE (org, name, member) IN \
         (SELECT org, name, member FROM group_members WHERE member = $1)",
        &[&f],
    )
    .await?;
    exec(tx, "DELETE FROM group_members WHERE member = $1", &[&f]).await?;
    let n = exec(tx, "DELETE FROM clients WHERE fingerprint = $1", &[&f]).await?;
    not_found_if_none(n)
}

pub(super) async fn delete_group(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
) -> TxResult<Applied> {
    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&org.as_str(), &name.as_str()];
    if query_opt(
        tx,
        "SELECT 1 FROM groups WHERE org = $1 AND name = $2 FOR UPDATE",
        &args,
    )
    .await?
    .is_none()
    {
        return Err(StoreError::NotFound.into());
    }
    let deps = group_dependents(&**tx, org, name)
        .await?
        .ok_or(StoreError::NotFound)?;
    in_use(deps.blockers())?;
    // Children first: the wrapped identities refer to both members and epochs.
    exec(
        tx,
        "DELETE FROM group_keys WHERE org = $1 AND name = $2",
        &args,
    )
    .await?;
    exec(
        tx,
        "DELETE FROM group_members WHERE org = $1 AND name = $2",
        &args,
    )
    .await?;
    exec(
        tx,
        "DELETE FROM group_epochs WHERE org = $1 AND name = $2",
        &args,
    )
    .await?;
    let n = exec(tx, "DELETE FROM groups WHERE org = $1 AND name = $2", &args).await?;
    not_found_if_none(n)
}

pub(super) async fn revoke_tokens(
    tx: &Tx<'_>,
    org: &OrgName,
    hashes: &[String],
) -> TxResult<Applied> {
    if query_opt(tx, "SELECT 1 FROM orgs WHERE name = $1", &[&org.as_str()])
        .await?
        .is_none()
    {
        return Err(StoreError::NotFound.into());
    }
    let n = exec(
        tx,
        "DELETE FROM registration_tokens WHERE hash = ANY($1) AND org = $2 AND used_at IS NULL",
        &[&hashes, &org.as_str()],
    )
    .await?;
    Ok(Applied::Revoked(n))
}

pub(super) async fn recover_admin(
    tx: &Tx<'_>,
    fp: &ClientFingerprint,
    at: Timestamp,
) -> TxResult<Applied> {
    let n = exec(
        tx,
        "UPDATE clients SET state = 'active', state_reason = NULL, role = 'admin', \
         token_hash = NULL, token_recent = '[]', token_confirmed = false, \
         token_kek_version = NULL, token_salt = NULL, updated_at = $2 WHERE fingerprint = $1",
        &[&fp.as_str(), &at.unix_millis()],
    )
    .await?;
    not_found_if_none(n)
}
