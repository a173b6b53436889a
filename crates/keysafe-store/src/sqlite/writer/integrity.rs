//! The MACs of authenticated access rows, kept by the writer around each mutation (see
//! `crate::integrity` for which rows, and ADR 0013), and the back-fill of rows written before
//! MACs existed.

use crate::integrity::{
    ClientRows, DepositRows, GroupRows, changed_clients, client_rows, deposit_rows,
    grants_rewritten, group_rows, touches_access_rows,
};
use crate::sqlite::conn::{all, exec, one};
use crate::sqlite::rows::{self, at};
use keysafe_core::store::{
    AccessRow, Applied, DepositKey, Mutation, RowAuthMode, RowAuthenticator, StoreError,
    StoreResult, check_before_write, mac_of,
};
use keysafe_proto::api::{ClientRole, ClientState};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Timestamp};
use rusqlite::{Connection, Row, params};
use std::sync::Arc;

type Auth<'a> = &'a RowAuthMode;

type ClientRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<Vec<u8>>,
);

macro_rules! client_access {
    () => {
        "SELECT fingerprint, org, state, role, recipient, mac FROM clients"
    };
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("clients.{what}"))
}

fn client_row(r: &Row<'_>) -> StoreResult<ClientRow> {
    Ok((
        at(r, 0)?,
        at(r, 1)?,
        at(r, 2)?,
        at(r, 3)?,
        at(r, 4)?,
        at(r, 5)?,
    ))
}

fn client_access(r: ClientRow) -> StoreResult<(AccessRow, Option<Vec<u8>>)> {
    let (fp, org, state, role, recipient, mac) = r;
    Ok((
        AccessRow::Client {
            fingerprint: ClientFingerprint::parse(&fp).map_err(|_| corrupt("fingerprint"))?,
            org: OrgName::parse(&org).map_err(|_| corrupt("org"))?,
            state: ClientState::parse(&state).ok_or_else(|| corrupt("state"))?,
            role: ClientRole::parse(&role).ok_or_else(|| corrupt("role"))?,
            recipient,
        },
        mac,
    ))
}

fn load_client(
    conn: &Connection,
    fp: &ClientFingerprint,
) -> StoreResult<Option<(AccessRow, Option<Vec<u8>>)>> {
    one(
        conn,
        concat!(client_access!(), " WHERE fingerprint = ?1"),
        [fp.as_str()],
        client_row,
    )?
    .map(client_access)
    .transpose()
}

/// What `before` found that `after` needs: the deposit headers to re-authenticate.
#[derive(Debug, Default)]
pub(super) struct Pending {
    heads: Vec<DepositKey>,
}

macro_rules! head_cols {
    () => {
        "SELECT d.org, d.owner, d.name, d.current_version, d.current_size, d.deleted, \
         d.acl_serial, d.created_at, d.updated_at, d.mac, 0 AS newest_version FROM deposits d"
    };
}

fn load_head(
    conn: &Connection,
    key: &DepositKey,
) -> StoreResult<Option<(AccessRow, Option<Vec<u8>>)>> {
    let rec = one(
        conn,
        concat!(head_cols!(), " WHERE d.owner = ?1 AND d.name = ?2"),
        params![key.owner.stored(), key.name.as_str()],
        rows::deposit,
    )?;
    Ok(rec.map(|rec| (AccessRow::deposit(&rec), rec.mac)))
}

/// Verifies the old MAC of every existing row `m` is about to change; refuses the change while
/// sealed.
pub(super) fn before(conn: &Connection, m: &Mutation, auth: Auth<'_>) -> StoreResult<Pending> {
    match auth {
        RowAuthMode::Off => return Ok(Pending::default()),
        RowAuthMode::Sealed if touches_access_rows(m) => return Err(StoreError::Sealed),
        RowAuthMode::Sealed => return Ok(Pending::default()),
        RowAuthMode::On(_) => {}
    }
    match client_rows(m) {
        ClientRows::None | ClientRows::One { verify: false, .. } => {}
        ClientRows::One {
            fingerprint,
            verify: true,
        } => {
            // A missing row: the mutation answers NotFound itself.
            if let Some((row, mac)) = load_client(conn, fingerprint)? {
                check_before_write(auth, &row, mac.as_deref())?;
            }
        }
        ClientRows::UnactivatedBefore(before) => {
            let rows = all(
                conn,
                concat!(
                    client_access!(),
                    " WHERE role = 'client' AND state IN ('pending', 'active') \
                     AND last_seen_at IS NULL AND created_at < ?1"
                ),
                [before.unix_millis()],
                client_row,
            )?;
            for r in rows {
                let (row, mac) = client_access(r)?;
                check_before_write(auth, &row, mac.as_deref())?;
            }
        }
    }
    let mut pending = Pending::default();
    match deposit_rows(m) {
        DepositRows::None => {}
        DepositRows::One(key) => {
            if let Some((row, mac)) = load_head(conn, key)? {
                check_before_write(auth, &row, mac.as_deref())?;
            }
            pending.heads.push(key.clone());
        }
        DepositRows::GranteeOf(fp) => {
            let found = all(
                conn,
                concat!(
                    head_cols!(),
                    " WHERE EXISTS (SELECT 1 FROM deposit_grants g WHERE g.owner = d.owner \
                     AND g.name = d.name AND g.grantee = ?1)"
                ),
                [fp.as_str()],
                rows::deposit,
            )?;
            for rec in found {
                check_before_write(auth, &AccessRow::deposit(&rec), rec.mac.as_deref())?;
                pending.heads.push(DepositKey {
                    owner: rec.owner,
                    name: rec.name,
                });
            }
        }
    }
    Ok(pending)
}

/// Stores a fresh MAC (none when MACs are off) on every row `m` changed.
pub(super) fn after(
    conn: &Connection,
    m: &Mutation,
    applied: &Applied,
    auth: Auth<'_>,
    pending: Pending,
) -> StoreResult<()> {
    let rows = client_rows(m);
    for fp in changed_clients(&rows, applied) {
        let Some((row, _)) = load_client(conn, fp)? else {
            continue;
        };
        exec(
            conn,
            "UPDATE clients SET mac = ?2 WHERE fingerprint = ?1",
            params![fp.as_str(), mac_of(auth, &row)],
        )?;
    }
    for key in &pending.heads {
        let Some((row, _)) = load_head(conn, key)? else {
            continue;
        };
        exec(
            conn,
            "UPDATE deposits SET mac = ?3 WHERE owner = ?1 AND name = ?2",
            params![key.owner.stored(), key.name.as_str(), mac_of(auth, &row)],
        )?;
    }
    if let Some(key) = grants_rewritten(m) {
        remac_grants(conn, key, auth)?;
    }
    match group_rows(m) {
        GroupRows::None => {}
        GroupRows::Created(org, name) => {
            remac_members(conn, org, name, None, auth)?;
            remac_epochs(conn, org, name, None, auth)?;
        }
        GroupRows::Member(org, name, member) => {
            remac_members(conn, org, name, Some(member), auth)?;
        }
        GroupRows::Epoch(org, name, epoch) => {
            remac_epochs(conn, org, name, Some(epoch), auth)?;
        }
    }
    Ok(())
}

/// Re-authenticates a group's membership rows (one member's, or all).
fn remac_members(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    member: Option<&ClientFingerprint>,
    auth: Auth<'_>,
) -> StoreResult<u64> {
    let members = all(
        conn,
        "SELECT member FROM group_members WHERE org = ?1 AND name = ?2 \
           AND (?3 IS NULL OR member = ?3)",
        params![org.as_str(), name.as_str(), member.map(|m| m.as_str())],
        |r| at::<String>(r, 0),
    )?;
    let mut n = 0;
    for m in members {
        let member = ClientFingerprint::parse(&m).map_err(|_| corrupt("member"))?;
        let row = AccessRow::GroupMember {
            org: org.clone(),
            name: name.clone(),
            member,
        };
        exec(
            conn,
            "UPDATE group_members SET mac = ?4 WHERE org = ?1 AND name = ?2 AND member = ?3",
            params![org.as_str(), name.as_str(), m, mac_of(auth, &row)],
        )?;
        n += 1;
    }
    Ok(n)
}

/// Re-authenticates a group's epoch rows (one epoch's, or all).
fn remac_epochs(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    epoch: Option<u64>,
    auth: Auth<'_>,
) -> StoreResult<u64> {
    let epochs = all(
        conn,
        "SELECT epoch, recipient FROM group_epochs WHERE org = ?1 AND name = ?2 \
           AND (?3 IS NULL OR epoch = ?3)",
        params![
            org.as_str(),
            name.as_str(),
            epoch.map(|e| i64::try_from(e).unwrap_or(i64::MAX))
        ],
        |r| Ok((at::<i64>(r, 0)?, at::<String>(r, 1)?)),
    )?;
    let mut n = 0;
    for (e, recipient) in epochs {
        let row = AccessRow::GroupEpoch {
            org: org.clone(),
            name: name.clone(),
            epoch: u64::try_from(e).map_err(|_| corrupt("epoch"))?,
            recipient,
        };
        exec(
            conn,
            "UPDATE group_epochs SET mac = ?4 WHERE org = ?1 AND name = ?2 AND epoch = ?3",
            params![org.as_str(), name.as_str(), e, mac_of(auth, &row)],
        )?;
        n += 1;
    }
    Ok(n)
}

fn remac_grants(conn: &Connection, key: &DepositKey, auth: Auth<'_>) -> StoreResult<u64> {
    let found = all(
        conn,
        "SELECT grantee AS g_grantee, access AS g_access, granted_by AS g_granted_by, \
                granted_at AS g_granted_at, mac AS g_mac \
         FROM deposit_grants WHERE owner = ?1 AND name = ?2",
        params![key.owner.stored(), key.name.as_str()],
        rows::grant,
    )?;
    let mut n = 0;
    for g in &found {
        exec(
            conn,
            "UPDATE deposit_grants SET mac = ?4 WHERE owner = ?1 AND name = ?2 AND grantee = ?3",
            params![
                key.owner.stored(),
                key.name.as_str(),
                g.grantee.stored(),
                mac_of(auth, &AccessRow::grant(key, g))
            ],
        )?;
        n += 1;
    }
    Ok(n)
}

/// `Mutation::BackfillRowMacs`.
pub(super) fn backfill(
    conn: &Connection,
    auth: &Arc<dyn RowAuthenticator>,
    completed: Timestamp,
) -> StoreResult<Applied> {
    if one(conn, "SELECT 1 FROM row_macs_backfill", [], |_| Ok(()))?.is_some() {
        return Ok(Applied::Backfilled(0));
    }
    let with_mac = one(
        conn,
        "SELECT (SELECT count(*) FROM clients WHERE mac IS NOT NULL) \
              + (SELECT count(*) FROM deposits WHERE mac IS NOT NULL) \
              + (SELECT count(*) FROM deposit_grants WHERE mac IS NOT NULL) \
              + (SELECT count(*) FROM group_members WHERE mac IS NOT NULL) \
              + (SELECT count(*) FROM group_epochs WHERE mac IS NOT NULL)",
        [],
        |r| at::<i64>(r, 0),
    )?
    .unwrap_or(0);
    if with_mac > 0 {
        return Err(StoreError::Conflict);
    }
    let clients = all(conn, client_access!(), [], client_row)?;
    let mut n = 0u64;
    for r in clients {
        let (row, _) = client_access(r)?;
        let AccessRow::Client { fingerprint, .. } = &row else {
            continue;
        };
        exec(
            conn,
            "UPDATE clients SET mac = ?2 WHERE fingerprint = ?1",
            params![fingerprint.as_str(), auth.mac(&row)],
        )?;
        n += 1;
    }
    let on = RowAuthMode::On(auth.clone());
    let heads = all(conn, head_cols!(), [], rows::deposit)?;
    for rec in &heads {
        let key = DepositKey {
            owner: rec.owner.clone(),
            name: rec.name.clone(),
        };
        exec(
            conn,
            "UPDATE deposits SET mac = ?3 WHERE owner = ?1 AND name = ?2",
            params![
                key.owner.stored(),
                key.name.as_str(),
                auth.mac(&AccessRow::deposit(rec))
            ],
        )?;
        n += 1 + remac_grants(conn, &key, &on)?;
    }
    let groups = all(conn, "SELECT org, name FROM groups", [], |r| {
        Ok((at::<String>(r, 0)?, at::<String>(r, 1)?))
    })?;
    for (org, name) in groups {
        let org = OrgName::parse(&org).map_err(|_| corrupt("group org"))?;
        let name = GroupName::parse(&name).map_err(|_| corrupt("group name"))?;
        n += remac_members(conn, &org, &name, None, &on)?;
        n += remac_epochs(conn, &org, &name, None, &on)?;
    }
    exec(
        conn,
        "INSERT INTO row_macs_backfill (id, completed_at, mac) VALUES (1, ?1, ?2)",
        params![
            completed.unix_millis(),
            auth.mac(&AccessRow::BackfillCompleted { at: completed })
        ],
    )?;
    Ok(Applied::Backfilled(n))
}
