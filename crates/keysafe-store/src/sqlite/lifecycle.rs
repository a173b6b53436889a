//! The lifecycle reads on SQLite: client pages, unused registration tokens, and what depends on
//! an organisation, a client or a group. The dependents queries take a connection so that the
//! writer runs exactly the same ones inside its write transaction (`writer/lifecycle.rs`): a
//! deletion's preview and the deletion decide by one rule.

use super::{SqliteStore, backend_error, rows};
use async_trait::async_trait;
use keysafe_core::store::{
    ClientDependents, ClientListing, ClientRecord, Counted, GroupDependents, GroupRef,
    LifecycleStore, OrgDependents, RegistrationTokenRecord, StoreResult,
};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Principal};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;

fn sample_limit() -> i64 {
    Counted::SAMPLE as i64
}

async fn count(conn: &mut SqliteConnection, sql: &'static str, args: &[&str]) -> StoreResult<u64> {
    let mut q = sqlx::query_scalar::<_, i64>(sql);
    for a in args {
        q = q.bind(*a);
    }
    let n = q.fetch_one(&mut *conn).await.map_err(backend_error)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// `count` rows of `sql_count`, and the first names `sql_sample` selects (one text column).
async fn counted(
    conn: &mut SqliteConnection,
    sql_count: &'static str,
    sql_sample: &'static str,
    arg: &str,
) -> StoreResult<Counted> {
    let n = count(conn, sql_count, &[arg]).await?;
    let sample = if n == 0 {
        Vec::new()
    } else {
        sqlx::query_scalar::<_, String>(sql_sample)
            .bind(arg)
            .bind(sample_limit())
            .fetch_all(&mut *conn)
            .await
            .map_err(backend_error)?
    };
    Ok(Counted { count: n, sample })
}

fn group_ref(row: &SqliteRow) -> StoreResult<GroupRef> {
    Ok(GroupRef {
        org: rows::org_name(row, "org")?,
        name: GroupName::parse(&rows::col::<String>(row, "name")?)
            .map_err(|_| rows::corrupt("name"))?,
    })
}

pub(crate) async fn org_dependents(
    conn: &mut SqliteConnection,
    org: &OrgName,
) -> StoreResult<Option<OrgDependents>> {
    let o = org.as_str();
    if count(conn, "SELECT count(*) FROM orgs WHERE name = ?1", &[o]).await? == 0 {
        return Ok(None);
    }
    Ok(Some(OrgDependents {
        clients: counted(
            conn,
            "SELECT count(*) FROM clients WHERE org = ?1",
            "SELECT fingerprint FROM clients WHERE org = ?1 ORDER BY fingerprint LIMIT ?2",
            o,
        )
        .await?,
        groups: counted(
            conn,
            "SELECT count(*) FROM groups WHERE org = ?1",
            "SELECT name FROM groups WHERE org = ?1 ORDER BY name LIMIT ?2",
            o,
        )
        .await?,
        unused_tokens: count(
            conn,
            "SELECT count(*) FROM registration_tokens WHERE org = ?1 AND used_at IS NULL",
            &[o],
        )
        .await?,
    }))
}

pub(crate) async fn client_dependents(
    conn: &mut SqliteConnection,
    fp: &ClientFingerprint,
) -> StoreResult<Option<ClientDependents>> {
    let f = fp.as_str();
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM clients WHERE fingerprint = ?1")
            .bind(f)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend_error)?;
    let Some(role) = role else {
        return Ok(None);
    };
    let last_active_admin = role == "admin"
        && count(
            conn,
            "SELECT count(*) FROM clients WHERE role = 'admin' AND state = 'active' \
             AND fingerprint <> ?1",
            &[f],
        )
        .await?
            == 0;
    let sole = sqlx::query(
        "SELECT m.org AS org, m.name AS name FROM group_members m \
         JOIN groups g ON g.org = m.org AND g.name = m.name \
         WHERE m.member = ?1 \
           AND EXISTS (SELECT 1 FROM group_keys k WHERE k.org = g.org AND k.name = g.name \
             AND k.member = ?1 AND k.epoch = g.epoch) \
           AND NOT EXISTS (SELECT 1 FROM group_keys o WHERE o.org = g.org \
             AND o.name = g.name AND o.epoch = g.epoch AND o.member <> ?1) \
         ORDER BY m.org, m.name",
    )
    .bind(f)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend_error)?
    .iter()
    .map(group_ref)
    .collect::<StoreResult<Vec<_>>>()?;
    let memberships =
        sqlx::query("SELECT org, name FROM group_members WHERE member = ?1 ORDER BY org, name")
            .bind(f)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend_error)?
            .iter()
            .map(group_ref)
            .collect::<StoreResult<Vec<_>>>()?;
    Ok(Some(ClientDependents {
        owned_deposits: counted(
            conn,
            "SELECT count(*) FROM deposits WHERE owner = ?1",
            "SELECT name FROM deposits WHERE owner = ?1 ORDER BY name LIMIT ?2",
            f,
        )
        .await?,
        sole_key_holder_of: sole,
        last_active_admin,
        memberships,
        grants: grants_to(conn, f).await?,
    }))
}

/// Deposits that grant `grantee` (stored form) access, named `OWNER:NAME`.
async fn grants_to(conn: &mut SqliteConnection, grantee: &str) -> StoreResult<Counted> {
    counted(
        conn,
        "SELECT count(*) FROM deposit_grants WHERE grantee = ?1",
        "SELECT owner || ':' || name FROM deposit_grants WHERE grantee = ?1 \
         ORDER BY owner, name LIMIT ?2",
        grantee,
    )
    .await
}

pub(crate) async fn group_dependents(
    conn: &mut SqliteConnection,
    org: &OrgName,
    name: &GroupName,
) -> StoreResult<Option<GroupDependents>> {
    let members: Option<i64> = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM group_members m WHERE m.org = g.org AND m.name = g.name) \
         FROM groups g WHERE g.org = ?1 AND g.name = ?2",
    )
    .bind(org.as_str())
    .bind(name.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend_error)?;
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
        )
        .await?,
        grants: grants_to(conn, &principal).await?,
        members: u64::try_from(members).unwrap_or(0),
    }))
}

/// Runs `f` on one read transaction of the pool, so that its queries see one snapshot.
macro_rules! in_snapshot {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let mut tx = $store.readers.begin().await.map_err(backend_error)?;
        let $conn: &mut SqliteConnection = &mut tx;
        let r = $body.await;
        // A read transaction: ending it commits nothing.
        let _ = tx.rollback().await;
        r
    }};
}

#[async_trait]
impl LifecycleStore for SqliteStore {
    async fn list_clients_page(&self, q: ClientListing<'_>) -> StoreResult<Vec<ClientRecord>> {
        let (after_org, after_at, after_fp) = match q.after {
            Some(c) => (
                Some(c.org.as_str()),
                Some(c.created_at.unix_millis()),
                Some(c.fingerprint.as_str()),
            ),
            None => (None, None, None),
        };
        sqlx::query(
            "SELECT * FROM clients WHERE (?1 IS NULL OR org = ?1) AND (?2 IS NULL OR state = ?2) \
             AND (?3 IS NULL OR (org, created_at, fingerprint) > (?3, ?4, ?5)) \
             ORDER BY org, created_at, fingerprint LIMIT ?6",
        )
        .bind(q.org.map(|o| o.as_str()))
        .bind(q.state.map(|s| s.as_str()))
        .bind(after_org)
        .bind(after_at)
        .bind(after_fp)
        .bind(i64::from(q.limit))
        .fetch_all(&self.readers)
        .await
        .map_err(backend_error)?
        .iter()
        .map(rows::client)
        .collect()
    }

    async fn list_unused_tokens(&self, org: &OrgName) -> StoreResult<Vec<RegistrationTokenRecord>> {
        sqlx::query(
            "SELECT hash, org, created_by, created_at, expires_at FROM registration_tokens \
             WHERE org = ?1 AND used_at IS NULL ORDER BY created_at, hash",
        )
        .bind(org.as_str())
        .fetch_all(&self.readers)
        .await
        .map_err(backend_error)?
        .iter()
        .map(|r| {
            Ok(RegistrationTokenRecord {
                hash: rows::col(r, "hash")?,
                org: rows::org_name(r, "org")?,
                created_by: rows::fingerprint(r, "created_by")?,
                created_at: rows::ts(r, "created_at")?,
                expires_at: rows::ts(r, "expires_at")?,
            })
        })
        .collect()
    }

    async fn org_dependents(&self, org: &OrgName) -> StoreResult<Option<OrgDependents>> {
        in_snapshot!(self, |conn| org_dependents(conn, org))
    }

    async fn client_dependents(
        &self,
        fp: &ClientFingerprint,
    ) -> StoreResult<Option<ClientDependents>> {
        in_snapshot!(self, |conn| client_dependents(conn, fp))
    }

    async fn group_dependents(
        &self,
        org: &OrgName,
        name: &GroupName,
    ) -> StoreResult<Option<GroupDependents>> {
        in_snapshot!(self, |conn| group_dependents(conn, org, name))
    }
}
