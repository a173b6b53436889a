//! The end-of-life mutations on SQLite: deleting organisations, clients and groups,
//! revoking registration tokens, and the offline recovery of an administrator. Each decides
//! with the same dependents queries as the preview (`sqlite/lifecycle.rs`), here under the
//! write lock, and removes what only the deleted record held in the same savepoint.

use super::done_or_not_found;
use crate::sqlite::conn::{exec as run, one};
use crate::sqlite::lifecycle::{client_dependents, group_dependents, org_dependents};
use keysafe_core::store::{Applied, StoreError, StoreResult, refusal};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Timestamp};
use rusqlite::Connection;
use rusqlite::types::ToSql;

/// Runs one cached statement with `args` (text) and then `at`, if given, as its parameters.
fn exec(
    conn: &Connection,
    sql: &'static str,
    args: &[&str],
    at: Option<i64>,
) -> StoreResult<usize> {
    let mut params: Vec<&dyn ToSql> = args.iter().map(|a| a as &dyn ToSql).collect();
    if let Some(at) = at.as_ref() {
        params.push(at);
    }
    run(conn, sql, params.as_slice())
}

fn in_use(blockers: Vec<String>) -> StoreResult<()> {
    if blockers.is_empty() {
        Ok(())
    } else {
        Err(StoreError::InUse(refusal(&blockers)))
    }
}

pub(super) fn delete_org(conn: &Connection, name: &OrgName) -> StoreResult<Applied> {
    let deps = org_dependents(conn, name)?.ok_or(StoreError::NotFound)?;
    in_use(deps.blockers())?;
    let o = name.as_str();
    exec(
        conn,
        "DELETE FROM registration_tokens WHERE org = ?1",
        &[o],
        None,
    )?;
    let n = exec(conn, "DELETE FROM orgs WHERE name = ?1", &[o], None)?;
    done_or_not_found(n)
}

pub(super) fn delete_client(
    conn: &Connection,
    fp: &ClientFingerprint,
    at: Timestamp,
) -> StoreResult<Applied> {
    let deps = client_dependents(conn, fp)?.ok_or(StoreError::NotFound)?;
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
    )?;
    exec(
        conn,
        "DELETE FROM deposit_grants WHERE grantee = ?1",
        &[f],
        None,
    )?;
    exec(
        conn,
        "UPDATE groups SET updated_at = ?2 \
         WHERE (org, name) IN (SELECT org, name FROM group_members WHERE member = ?1)",
        &[f],
        at,
    )?;
    exec(
        conn,
        "DELETE FROM group_keys WHERE (org, name, member) IN \
         (SELECT org, name, member FROM group_members WHERE member = ?1)",
        &[f],
        None,
    )?;
    exec(
        conn,
        "DELETE FROM group_members WHERE member = ?1",
        &[f],
        None,
    )?;
    let n = exec(
        conn,
        "DELETE FROM clients WHERE fingerprint = ?1",
        &[f],
        None,
    )?;
    done_or_not_found(n)
}

pub(super) fn delete_group(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
) -> StoreResult<Applied> {
    let deps = group_dependents(conn, org, name)?.ok_or(StoreError::NotFound)?;
    in_use(deps.blockers())?;
    let args = [org.as_str(), name.as_str()];
    // Children first: the wrapped identities refer to both members and epochs.
    exec(
        conn,
        "DELETE FROM group_keys WHERE org = ?1 AND name = ?2",
        &args,
        None,
    )?;
    exec(
        conn,
        "DELETE FROM group_members WHERE org = ?1 AND name = ?2",
        &args,
        None,
    )?;
    exec(
        conn,
        "DELETE FROM group_epochs WHERE org = ?1 AND name = ?2",
        &args,
        None,
    )?;
    let n = exec(
        conn,
        "DELETE FROM groups WHERE org = ?1 AND name = ?2",
        &args,
        None,
    )?;
    done_or_not_found(n)
}

pub(super) fn revoke_tokens(
    conn: &Connection,
    org: &OrgName,
    hashes: &[String],
) -> StoreResult<Applied> {
    let o = org.as_str();
    if one(conn, "SELECT 1 FROM orgs WHERE name = ?1", [o], |_| Ok(()))?.is_none() {
        return Err(StoreError::NotFound);
    }
    let mut revoked = 0u64;
    for h in hashes {
        let n = exec(
            conn,
            "DELETE FROM registration_tokens WHERE hash = ?1 AND org = ?2 AND used_at IS NULL",
            &[h.as_str(), o],
            None,
        )?;
        revoked += u64::try_from(n).unwrap_or(u64::MAX);
    }
    Ok(Applied::Revoked(revoked))
}

pub(super) fn recover_admin(
    conn: &Connection,
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
    )?;
    done_or_not_found(n)
}
