//! The lifecycle reads on SQLite: client pages, unused registration tokens, and what depends on
//! an organisation, a client or a group. The dependents queries take a connection so that the
//! writer runs exactly the same ones inside its write transaction (`writer/lifecycle.rs`): a
//! deletion's preview and the deletion decide by one rule. Every read here grows with the data,
//! so the store runs them on the blocking pool.

use super::conn::{all, one};
use super::{SqliteStore, rows};
use async_trait::async_trait;
use keysafe_core::store::{
    ClientDependents, ClientListing, ClientRecord, Counted, GroupDependents, GroupRef,
    LifecycleStore, OrgDependents, RegistrationTokenRecord, StoreResult,
};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Principal};
use rusqlite::{Connection, Row, params};

fn sample_limit() -> i64 {
    i64::try_from(Counted::SAMPLE).unwrap_or(i64::MAX)
}

fn count(conn: &Connection, sql: &'static str, args: &[&str]) -> StoreResult<u64> {
    let n = one(conn, sql, rusqlite::params_from_iter(args.iter()), |r| {
        rows::at::<i64>(r, 0)
    })?
    .unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// `count` rows of `sql_count`, and the first names `sql_sample` selects (one text column).
fn counted(
    conn: &Connection,
    sql_count: &'static str,
    sql_sample: &'static str,
    arg: &str,
) -> StoreResult<Counted> {
    let n = count(conn, sql_count, &[arg])?;
    let sample = if n == 0 {
        Vec::new()
    } else {
        all(conn, sql_sample, params![arg, sample_limit()], |r| {
            rows::at::<String>(r, 0)
        })?
    };
    Ok(Counted { count: n, sample })
}

fn group_ref(row: &Row<'_>) -> StoreResult<GroupRef> {
    Ok(GroupRef {
        org: rows::org_name(row, "org")?,
        name: GroupName::parse(&rows::col::<String>(row, "name")?)
            .map_err(|_| rows::corrupt("name"))?,
    })
}

pub(crate) fn org_dependents(
    conn: &Connection,
    org: &OrgName,
) -> StoreResult<Option<OrgDependents>> {
    let o = org.as_str();
    if count(conn, "SELECT count(*) FROM orgs WHERE name = ?1", &[o])? == 0 {
        return Ok(None);
    }
    Ok(Some(OrgDependents {
        clients: counted(
            conn,
            "SELECT count(*) FROM clients WHERE org = ?1",
            "SELECT fingerprint FROM clients WHERE org = ?1 ORDER BY fingerprint LIMIT ?2",
            o,
        )?,
        groups: counted(
            conn,
            "SELECT count(*) FROM groups WHERE org = ?1",
            "SELECT name FROM groups WHERE org = ?1 ORDER BY name LIMIT ?2",
            o,
        )?,
        unused_tokens: count(
            conn,
            "SELECT count(*) FROM registration_tokens WHERE org = ?1 AND used_at IS NULL",
            &[o],
        )?,
    }))
}

pub(crate) fn client_dependents(
    conn: &Connection,
    fp: &ClientFingerprint,
) -> StoreResult<Option<ClientDependents>> {
    let f = fp.as_str();
    let role = one(
        conn,
        "SELECT role FROM clients WHERE fingerprint = ?1",
        [f],
        |r| rows::at::<String>(r, 0),
    )?;
    let Some(role) = role else {
        return Ok(None);
    };
    let last_active_admin = role == "admin"
        && count(
            conn,
            "SELECT count(*) FROM clients WHERE role = 'admin' AND state = 'active' \
             AND fingerprint <> ?1",
            &[f],
        )? == 0;
    let sole = all(
        conn,
        "SELECT m.org AS org, m.name AS name FROM group_members m \
         JOIN groups g ON g.org = m.org AND g.name = m.name \
         WHERE m.member = ?1 \
           AND EXISTS (SELECT 1 FROM group_keys k WHERE k.org = g.org AND k.name = g.name \
             AND k.member = ?1 AND k.epoch = g.epoch) \
           AND NOT EXISTS (SELECT 1 FROM group_keys o WHERE o.org = g.org \
             AND o.name = g.name AND o.epoch = g.epoch AND o.member <> ?1) \
         ORDER BY m.org, m.name",
        [f],
        group_ref,
    )?;
    let memberships = all(
        conn,
        "SELECT org, name FROM group_members WHERE member = ?1 ORDER BY org, name",
        [f],
        group_ref,
    )?;
    Ok(Some(ClientDependents {
        owned_deposits: counted(
            conn,
            "SELECT count(*) FROM deposits WHERE owner = ?1",
            "SELECT name FROM deposits WHERE owner = ?1 ORDER BY name LIMIT ?2",
            f,
        )?,
        sole_key_holder_of: sole,
        last_active_admin,
        memberships,
        grants: grants_to(conn, f)?,
    }))
}

/// Deposits that grant `grantee` (stored form) access, named `OWNER:NAME`.
fn grants_to(conn: &Connection, grantee: &str) -> StoreResult<Counted> {
    counted(
        conn,
        "SELECT count(*) FROM deposit_grants WHERE grantee = ?1",
        "SELECT owner || ':' || name FROM deposit_grants WHERE grantee = ?1 \
         ORDER BY owner, name LIMIT ?2",
        grantee,
    )
}

pub(crate) fn group_dependents(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
) -> StoreResult<Option<GroupDependents>> {
    let members = one(
        conn,
        "SELECT (SELECT count(*) FROM group_members m WHERE m.org = g.org AND m.name = g.name) \
         FROM groups g WHERE g.org = ?1 AND g.name = ?2",
        params![org.as_str(), name.as_str()],
        |r| rows::at::<i64>(r, 0),
    )?;
    let Some(members) = members else {
        return Ok(None);
    };
    let principal = Principal::Group {
        org: org.clone(),
        name: name.clone(),
    }
    .stored();
    Ok(Some(GroupDependents {
        owned_deposits: counted(
            conn,
            "SELECT count(*) FROM deposits WHERE owner = ?1",
            "SELECT name FROM deposits WHERE owner = ?1 ORDER BY name LIMIT ?2",
            &principal,
        )?,
        grants: grants_to(conn, &principal)?,
        members: u64::try_from(members).unwrap_or(0),
    }))
}

#[async_trait]
impl LifecycleStore for SqliteStore {
    async fn list_clients_page(&self, q: ClientListing<'_>) -> StoreResult<Vec<ClientRecord>> {
        let (after_org, after_at, after_fp) = match q.after {
            Some(c) => (
                Some(c.org.as_str().to_owned()),
                Some(c.created_at.unix_millis()),
                Some(c.fingerprint.as_str().to_owned()),
            ),
            None => (None, None, None),
        };
        let org = q.org.map(|o| o.as_str().to_owned());
        let state = q.state.map(|s| s.as_str());
        let limit = i64::from(q.limit);
        self.readers
            .run_blocking(move |c| {
                all(
                    c,
                    "SELECT * FROM clients WHERE (?1 IS NULL OR org = ?1) \
                     AND (?2 IS NULL OR state = ?2) \
                     AND (?3 IS NULL OR (org, created_at, fingerprint) > (?3, ?4, ?5)) \
                     ORDER BY org, created_at, fingerprint LIMIT ?6",
                    params![org, state, after_org, after_at, after_fp, limit],
                    rows::client,
                )
            })
            .await
    }

    async fn list_unused_tokens(&self, org: &OrgName) -> StoreResult<Vec<RegistrationTokenRecord>> {
        let org = org.as_str().to_owned();
        self.readers
            .run_blocking(move |c| {
                all(
                    c,
                    "SELECT hash, org, created_by, created_at, expires_at \
                     FROM registration_tokens \
                     WHERE org = ?1 AND used_at IS NULL ORDER BY created_at, hash",
                    [org],
                    |r| {
                        Ok(RegistrationTokenRecord {
                            hash: rows::col(r, "hash")?,
                            org: rows::org_name(r, "org")?,
                            created_by: rows::fingerprint(r, "created_by")?,
                            created_at: rows::ts(r, "created_at")?,
                            expires_at: rows::ts(r, "expires_at")?,
                        })
                    },
                )
            })
            .await
    }

    async fn org_dependents(&self, org: &OrgName) -> StoreResult<Option<OrgDependents>> {
        let org = org.clone();
        self.readers
            .run_snapshot(move |c| org_dependents(c, &org))
            .await
    }

    async fn client_dependents(
        &self,
        fp: &ClientFingerprint,
    ) -> StoreResult<Option<ClientDependents>> {
        let fp = fp.clone();
        self.readers
            .run_snapshot(move |c| client_dependents(c, &fp))
            .await
    }

    async fn group_dependents(
        &self,
        org: &OrgName,
        name: &GroupName,
    ) -> StoreResult<Option<GroupDependents>> {
        let (org, name) = (org.clone(), name.clone());
        self.readers
            .run_snapshot(move |c| group_dependents(c, &org, &name))
            .await
    }
}
