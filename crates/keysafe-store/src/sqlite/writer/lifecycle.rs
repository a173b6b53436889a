//! The end-of-life mutations on SQLite: deleting organisations, clients and groups,
//! revoking registration tokens, and the offline recovery of an administrator. Each decides
//! with the same dependents queries as the preview (`sqlite/lifecycle.rs`), here under the
//! write lock, and removes what only the deleted record held in the same savepoint.

use super::{done_or_not_found, write_error};
use crate::sqlite::lifecycle::{client_dependents, group_dependents, org_dependents};
use keysafe_core::store::{Applied, StoreError, StoreResult, refusal};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Timestamp};
use sqlx::SqliteConnection;

async fn exec(
    conn: &mut SqliteConnection,
    sql: &'static str,
    args: &[&str],
    at: Option<i64>,
) -> StoreResult<u64> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    if let Some(at) = at {
        q = q.bind(at);
    }
    Ok(q.execute(&mut *conn)
        .await
        .map_err(write_error)?
        .rows_affected())
}

fn in_use(blockers: Vec<String>) -> StoreResult<()> {
    if blockers.is_empty() {
        Ok(())
    } else {
        Err(StoreError::InUse(refusal(&blockers)))
    }
}

pub(super) async fn delete_org(
    conn: &mut SqliteConnection,
    name: &OrgName,
) -> StoreResult<Applied> {
    let deps = org_dependents(conn, name)
        .await?
        .ok_or(StoreError::NotFound)?;
    in_use(deps.blockers())?;
    let o = name.as_str();
    exec(
        conn,
        "DELETE FROM registration_tokens WHERE org = ?1",
        &[o],
        None,
    )
    .await?;
    let n = exec(conn, "DELETE FROM orgs WHERE name = ?1", &[o], None).await?;
    done_or_not_found(n)
}

pub(super) async fn delete_client(
    conn: &mut SqliteConnection,
    fp: &ClientFingerprint,
    at: Timestamp,
) -> StoreResult<Applied> {
    let deps = client_dependents(conn, fp)
        .await?
        .ok_or(StoreError::NotFound)?;
    in_use(deps.blockers())?;
    let f = fp.as_str();
    let at = Some(at.unix_millis());
    // Every deposit that granted the client access changes its ACL: a writer that encrypted
    // for the old recipient set must read the ACL again.
    exec(
        conn,
        "UPDATE deposits SET acl_serial = acl_serial + 1, updated_at = ?2 \
         WHERE (owner, name) IN (SELECT owner, name FROM deposit_grants WHERE grantee = ?1)",
        &[f],
        at,
    )
    .await?;
    exec(
        conn,
        "DELETE FROM deposit_grants WHERE grantee = ?1",
        &[f],
        None,
    )
    .await?;
    exec(
        conn,
        "UPDATE groups SET updated_at = ?2 \
         WHERE (org, name) IN (SELECT org, name FROM group_members WHERE member = ?1)",
        &[f],
        at,
    )
    .await?;
    exec(
        conn,
        "DELETE FROM group_keys WHERE (org, name, member) IN \
         (SELECT org, name, member FROM group_members WHERE member = ?1)",
        &[f],
        None,
    )
    .await?;
    exec(
        conn,
        "DELETE FROM group_members WHERE member = ?1",
        &[f],
        None,
    )
    .await?;
    let n = exec(
        conn,
        "DELETE FROM clients WHERE fingerprint = ?1",
        &[f],
        None,
    )
    .await?;
    done_or_not_found(n)
}

pub(super) async fn delete_group(
    conn: &mut SqliteConnection,
    org: &OrgName,
    name: &GroupName,
) -> StoreResult<Applied> {
    let deps = group_dependents(conn, org, name)
        .await?
        .ok_or(StoreError::NotFound)?;
    in_use(deps.blockers())?;
    let args = [org.as_str(), name.as_str()];
    // Children first: the wrapped identities refer to both members and epochs.
    exec(
        conn,
        "DELETE FROM group_keys WHERE org = ?1 AND name = ?2",
        &args,
        None,
    )
    .await?;
    exec(
        conn,
        "DELETE FROM group_members WHERE org = ?1 AND name = ?2",
        &args,
        None,
    )
    .await?;
    exec(
        conn,
        "DELETE FROM group_epochs WHERE org = ?1 AND name = ?2",
        &args,
        None,
    )
    .await?;
    let n = exec(
        conn,
        "DELETE FROM groups WHERE org = ?1 AND name = ?2",
        &args,
        None,
    )
    .await?;
    done_or_not_found(n)
}

pub(super) async fn revoke_tokens(
    conn: &mut SqliteConnection,
    org: &OrgName,
    hashes: &[String],
) -> StoreResult<Applied> {
    let o = org.as_str();
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM orgs WHERE name = ?1")
        .bind(o)
        .fetch_optional(&mut *conn)
        .await
        .map_err(write_error)?;
    if exists.is_none() {
        return Err(StoreError::NotFound);
    }
    let mut revoked = 0;
    for h in hashes {
        revoked += exec(
            conn,
            "DELETE FROM registration_tokens WHERE hash = ?1 AND org = ?2 AND used_at IS NULL",
            &[h.as_str(), o],
            None,
        )
        .await?;
    }
    Ok(Applied::Revoked(revoked))
}

pub(super) async fn recover_admin(
    conn: &mut SqliteConnection,
    fp: &ClientFingerprint,
    at: Timestamp,
) -> StoreResult<Applied> {
    let n = exec(
        conn,
        "UPDATE clients SET state = 'active', state_reason = NULL, role = 'admin', \
         token_hash = NULL, token_recent = '[]', token_confirmed = 0, \
         token_kek_version = NULL, token_salt = NULL, updated_at = ?2 WHERE fingerprint = ?1",
        &[fp.as_str()],
        Some(at.unix_millis()),
    )
    .await?;
    done_or_not_found(n)
}
