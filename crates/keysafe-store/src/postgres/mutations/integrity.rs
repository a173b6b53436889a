//! The MACs of authenticated access rows, kept by the writer around each mutation (see
//! `crate::integrity` for which rows, and ADR 0013), and the back-fill of rows written before
//! MACs existed. Rows are read `FOR UPDATE`: another node cannot change a row between its
//! verification and the write.

use super::{exec, query, query_opt};
use crate::integrity::{
    ClientRows, DepositRows, GroupRows, changed_clients, client_rows, deposit_rows,
    grants_rewritten, group_rows, touches_access_rows,
};
use crate::postgres::rows;
use crate::postgres::writer::{Tx, TxResult};
use keysafe_core::store::{
    AccessRow, Applied, DepositKey, Mutation, RowAuthMode, RowAuthenticator, StoreError,
    StoreResult, check_before_write, mac_of,
};
use keysafe_proto::api::{ClientRole, ClientState};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Timestamp};
use std::sync::Arc;
use tokio_postgres::Row;

type Auth<'a> = &'a RowAuthMode;

macro_rules! client_access {
    () => {
        "SELECT fingerprint, org, state, role, recipient, mac FROM clients"
    };
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("clients.{what}"))
}

fn client_access(r: &Row) -> StoreResult<(AccessRow, Option<Vec<u8>>)> {
    let text = |i: usize| r.try_get::<_, String>(i).map_err(|_| corrupt("columns"));
    Ok((
        AccessRow::Client {
            fingerprint: ClientFingerprint::parse(&text(0)?).map_err(|_| corrupt("fingerprint"))?,
            org: OrgName::parse(&text(1)?).map_err(|_| corrupt("org"))?,
            state: ClientState::parse(&text(2)?).ok_or_else(|| corrupt("state"))?,
            role: ClientRole::parse(&text(3)?).ok_or_else(|| corrupt("role"))?,
            recipient: r.try_get(4).map_err(|_| corrupt("recipient"))?,
        },
        r.try_get(5).map_err(|_| corrupt("mac"))?,
    ))
}

async fn load_client(
    tx: &Tx<'_>,
    fp: &ClientFingerprint,
) -> TxResult<Option<(AccessRow, Option<Vec<u8>>)>> {
    let row = query_opt(
        tx,
        concat!(client_access!(), " WHERE fingerprint = $1 FOR UPDATE"),
        &[&fp.as_str()],
    )
    .await?;
    Ok(row.as_ref().map(client_access).transpose()?)
}

/// What `before` found that `after` needs: the deposit headers to re-authenticate.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    heads: Vec<DepositKey>,
}

macro_rules! head_cols {
    () => {
        "SELECT d.org, d.owner, d.name, d.current_version, d.current_size, d.deleted, \
         d.acl_serial, d.created_at, d.updated_at, d.mac, 0::bigint AS newest_version \
         FROM deposits d"
    };
}

async fn load_head(
    tx: &Tx<'_>,
    key: &DepositKey,
) -> TxResult<Option<(AccessRow, Option<Vec<u8>>)>> {
    let row = query_opt(
        tx,
        concat!(
            head_cols!(),
            " WHERE d.owner = $1 AND d.name = $2 FOR UPDATE"
        ),
        &[&key.owner.stored(), &key.name.as_str()],
    )
    .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let rec = rows::deposit(&r)?;
            Ok(Some((AccessRow::deposit(&rec), rec.mac)))
        }
    }
}

/// Verifies the old MAC of every existing row `m` is about to change; refuses the change while
/// sealed.
pub(crate) async fn before(tx: &Tx<'_>, m: &Mutation, auth: Auth<'_>) -> TxResult<Pending> {
    match auth {
        RowAuthMode::Off => return Ok(Pending::default()),
        RowAuthMode::Sealed if touches_access_rows(m) => return Err(StoreError::Sealed.into()),
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
            if let Some((row, mac)) = load_client(tx, fingerprint).await? {
                check_before_write(auth, &row, mac.as_deref())?;
            }
        }
        ClientRows::UnactivatedBefore(before) => {
            let rows = query(
                tx,
                concat!(
                    client_access!(),
                    " WHERE role = 'client' AND state IN ('pending', 'active') \
                     AND last_seen_at IS NULL AND created_at < $1 FOR UPDATE"
                ),
                &[&before.unix_millis()],
            )
            .await?;
            for r in &rows {
                let (row, mac) = client_access(r)?;
                check_before_write(auth, &row, mac.as_deref())?;
            }
        }
    }
    let mut pending = Pending::default();
    match deposit_rows(m) {
        DepositRows::None => {}
        DepositRows::One(key) => {
            if let Some((row, mac)) = load_head(tx, key).await? {
                check_before_write(auth, &row, mac.as_deref())?;
            }
            pending.heads.push(key.clone());
        }
        DepositRows::GranteeOf(fp) => {
            let found = query(
                tx,
                concat!(
                    head_cols!(),
                    " WHERE EXISTS (SELECT 1 FROM deposit_grants g WHERE g.owner = d.owner \
                       AND g.name = d.name AND g.grantee = $1) FOR UPDATE"
                ),
                &[&fp.as_str()],
            )
            .await?;
            for r in &found {
                let rec = rows::deposit(r)?;
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
pub(crate) async fn after(
    tx: &Tx<'_>,
    m: &Mutation,
    applied: &Applied,
    auth: Auth<'_>,
    pending: Pending,
) -> TxResult<()> {
    let rows = client_rows(m);
    for fp in changed_clients(&rows, applied) {
        let Some((row, _)) = load_client(tx, fp).await? else {
            continue;
        };
        exec(
            tx,
            "UPDATE clients SET mac = $2 WHERE fingerprint = $1",
            &[&fp.as_str(), &mac_of(auth, &row)],
        )
        .await?;
    }
    for key in &pending.heads {
        let Some((row, _)) = load_head(tx, key).await? else {
            continue;
        };
        exec(
            tx,
            "UPDATE deposits SET mac = $3 WHERE owner = $1 AND name = $2",
            &[&key.owner.stored(), &key.name.as_str(), &mac_of(auth, &row)],
        )
        .await?;
    }
    if let Some(key) = grants_rewritten(m) {
        remac_grants(tx, key, auth).await?;
    }
    match group_rows(m) {
        GroupRows::None => {}
        GroupRows::Created(org, name) => {
            remac_members(tx, org, name, None, auth).await?;
            remac_epochs(tx, org, name, None, auth).await?;
        }
        GroupRows::Member(org, name, member) => {
            remac_members(tx, org, name, Some(member), auth).await?;
        }
        GroupRows::Epoch(org, name, epoch) => {
            remac_epochs(tx, org, name, Some(epoch), auth).await?;
        }
    }
    Ok(())
}

/// Re-authenticates a group's membership rows (one member's, or all).
async fn remac_members(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
    member: Option<&ClientFingerprint>,
    auth: Auth<'_>,
) -> TxResult<u64> {
    let found = query(
        tx,
        "SELECT member FROM group_members WHERE org = $1 AND name = $2 \
           AND ($3::text IS NULL OR member = $3)",
        &[&org.as_str(), &name.as_str(), &member.map(|m| m.as_str())],
    )
    .await?;
    let mut n = 0;
    for r in &found {
        let m: String = r.try_get(0).map_err(|_| corrupt("member"))?;
        let row = AccessRow::GroupMember {
            org: org.clone(),
            name: name.clone(),
            member: ClientFingerprint::parse(&m).map_err(|_| corrupt("member"))?,
        };
        exec(
            tx,
            "UPDATE group_members SET mac = $4 WHERE org = $1 AND name = $2 AND member = $3",
            &[&org.as_str(), &name.as_str(), &m, &mac_of(auth, &row)],
        )
        .await?;
        n += 1;
    }
    Ok(n)
}

/// Re-authenticates a group's epoch rows (one epoch's, or all).
async fn remac_epochs(
    tx: &Tx<'_>,
    org: &OrgName,
    name: &GroupName,
    epoch: Option<u64>,
    auth: Auth<'_>,
) -> TxResult<u64> {
    let found = query(
        tx,
        "SELECT epoch, recipient FROM group_epochs WHERE org = $1 AND name = $2 \
           AND ($3::bigint IS NULL OR epoch = $3)",
        &[
            &org.as_str(),
            &name.as_str(),
            &epoch.map(|e| i64::try_from(e).unwrap_or(i64::MAX)),
        ],
    )
    .await?;
    let mut n = 0;
    for r in &found {
        let e: i64 = r.try_get(0).map_err(|_| corrupt("epoch"))?;
        let recipient: String = r.try_get(1).map_err(|_| corrupt("recipient"))?;
        let row = AccessRow::GroupEpoch {
            org: org.clone(),
            name: name.clone(),
            epoch: u64::try_from(e).map_err(|_| corrupt("epoch"))?,
            recipient,
        };
        exec(
            tx,
            "UPDATE group_epochs SET mac = $4 WHERE org = $1 AND name = $2 AND epoch = $3",
            &[&org.as_str(), &name.as_str(), &e, &mac_of(auth, &row)],
        )
        .await?;
        n += 1;
    }
    Ok(n)
}

async fn remac_grants(tx: &Tx<'_>, key: &DepositKey, auth: Auth<'_>) -> TxResult<u64> {
    let found = query(
        tx,
        "SELECT grantee AS g_grantee, access AS g_access, granted_by AS g_granted_by, \
                granted_at AS g_granted_at, mac AS g_mac \
         FROM deposit_grants WHERE owner = $1 AND name = $2",
        &[&key.owner.stored(), &key.name.as_str()],
    )
    .await?;
    let mut n = 0;
    for r in &found {
        let g = rows::grant(r)?;
        exec(
            tx,
            "UPDATE deposit_grants SET mac = $4 WHERE owner = $1 AND name = $2 AND grantee = $3",
            &[
                &key.owner.stored(),
                &key.name.as_str(),
                &g.grantee.stored(),
                &mac_of(auth, &AccessRow::grant(key, &g)),
            ],
        )
        .await?;
        n += 1;
    }
    Ok(n)
}

/// `Mutation::BackfillRowMacs`.
pub(super) async fn backfill(
    tx: &Tx<'_>,
    auth: &Arc<dyn RowAuthenticator>,
    at: Timestamp,
) -> TxResult<Applied> {
    // Two nodes starting at once: the second waits here, then finds the record.
    exec(tx, "LOCK TABLE row_macs_backfill IN EXCLUSIVE MODE", &[]).await?;
    if query_opt(tx, "SELECT 1 FROM row_macs_backfill", &[])
        .await?
        .is_some()
    {
        return Ok(Applied::Backfilled(0));
    }
    let with_mac: i64 = query_opt(
        tx,
        "SELECT (SELECT count(*) FROM clients WHERE mac IS NOT NULL) \
              + (SELECT count(*) FROM deposits WHERE mac IS NOT NULL) \
              + (SELECT count(*) FROM deposit_grants WHERE mac IS NOT NULL) \
              + (SELECT count(*) FROM group_members WHERE mac IS NOT NULL) \
              + (SELECT count(*) FROM group_epochs WHERE mac IS NOT NULL)",
        &[],
    )
    .await?
    .map(|r| r.get(0))
    .unwrap_or(0);
    if with_mac > 0 {
        return Err(StoreError::Conflict.into());
    }
    let rows = query(tx, concat!(client_access!(), " FOR UPDATE"), &[]).await?;
    let mut n = 0u64;
    for r in &rows {
        let (row, _) = client_access(r)?;
        let AccessRow::Client { fingerprint, .. } = &row else {
            continue;
        };
        exec(
            tx,
            "UPDATE clients SET mac = $2 WHERE fingerprint = $1",
            &[&fingerprint.as_str(), &auth.mac(&row)],
        )
        .await?;
        n += 1;
    }
    let on = RowAuthMode::On(auth.clone());
    let heads = query(tx, concat!(head_cols!(), " FOR UPDATE"), &[]).await?;
    for r in &heads {
        let rec = rows::deposit(r)?;
        let key = DepositKey {
            owner: rec.owner.clone(),
            name: rec.name.clone(),
        };
        exec(
            tx,
            "UPDATE deposits SET mac = $3 WHERE owner = $1 AND name = $2",
            &[
                &key.owner.stored(),
                &key.name.as_str(),
                &auth.mac(&AccessRow::deposit(&rec)),
            ],
        )
        .await?;
        n += 1 + remac_grants(tx, &key, &on).await?;
    }
    let groups = query(tx, "SELECT org, name FROM groups FOR UPDATE", &[]).await?;
    for r in &groups {
        let org = rows::org_name(r, "org")?;
        let name = rows::group_name(r, "name")?;
        n += remac_members(tx, &org, &name, None, &on).await?;
        n += remac_epochs(tx, &org, &name, None, &on).await?;
    }
    exec(
        tx,
        "INSERT INTO row_macs_backfill (id, completed_at, mac) VALUES (1, $1, $2)",
        &[
            &at.unix_millis(),
            &auth.mac(&AccessRow::BackfillCompleted { at }),
        ],
    )
    .await?;
    Ok(Applied::Backfilled(n))
}
