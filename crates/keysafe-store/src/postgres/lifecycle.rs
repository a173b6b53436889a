//! The lifecycle reads on PostgreSQL: client pages, unused registration tokens, and what
//! depends on an organisation, a client or a group. The dependents queries take a transaction
//! so that the writer runs exactly the same ones inside its write transaction, after the audit
//! head lock (`mutations/lifecycle.rs`): a deletion's preview and the deletion decide by one
//! rule. Previews read one REPEATABLE READ snapshot.

use super::PostgresStore;
use super::errors::{pool_error, store_error};
use super::reads::{client_cols, query};
use super::rows;
use super::writer::{TxError, TxResult};
use async_trait::async_trait;
use keysafe_core::store::{
    ClientDependents, ClientListing, ClientRecord, Counted, GroupDependents, GroupRef,
    LifecycleStore, OrgDependents, RegistrationTokenRecord, StoreError, StoreResult,
};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Principal};
use tokio_postgres::GenericClient;
use tokio_postgres::Row;

fn sample_limit() -> i64 {
    Counted::SAMPLE as i64
}

async fn count<C: GenericClient>(c: &C, sql: &str, arg: &str) -> TxResult<u64> {
    let n: i64 = c.query_one(sql, &[&arg]).await?.try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// How many rows `sql_count` counts, and the first names `sql_sample` selects (one text
/// column; `$2` is the limit).
async fn counted<C: GenericClient>(
    c: &C,
    sql_count: &str,
    sql_sample: &str,
    arg: &str,
) -> TxResult<Counted> {
    let n = count(c, sql_count, arg).await?;
    let mut sample = Vec::new();
    if n > 0 {
        for r in c.query(sql_sample, &[&arg, &sample_limit()]).await? {
            sample.push(r.try_get::<_, String>(0)?);
        }
    }
    Ok(Counted { count: n, sample })
}

fn group_ref(r: &Row) -> StoreResult<GroupRef> {
    Ok(GroupRef {
        org: rows::org_name(r, "org")?,
        name: rows::group_name(r, "name")?,
    })
}

pub(crate) async fn org_dependents<C: GenericClient>(
    c: &C,
    org: &OrgName,
) -> TxResult<Option<OrgDependents>> {
    let o = org.as_str();
    if count(c, "SELECT count(*) FROM orgs WHERE name = $1", o).await? == 0 {
        return Ok(None);
    }
    Ok(Some(OrgDependents {
        clients: counted(
            c,
            "SELECT count(*) FROM clients WHERE org = $1",
            "SELECT fingerprint FROM clients WHERE org = $1 ORDER BY fingerprint LIMIT $2",
            o,
        )
        .await?,
        groups: counted(
            c,
            "SELECT count(*) FROM groups WHERE org = $1",
            "SELECT name FROM groups WHERE org = $1 ORDER BY name LIMIT $2",
            o,
        )
        .await?,
        unused_tokens: count(
            c,
            "SELECT count(*) FROM registration_tokens WHERE org = $1 AND used_at IS NULL",
            o,
        )
        .await?,
    }))
}

pub(crate) async fn client_dependents<C: GenericClient>(
    c: &C,
    fp: &ClientFingerprint,
) -> TxResult<Option<ClientDependents>> {
    let f = fp.as_str();
    let Some(row) = c
        .query_opt("SELECT role FROM clients WHERE fingerprint = $1", &[&f])
        .await?
    else {
        return Ok(None);
    };
    let role: String = row.try_get(0)?;
    let last_active_admin = role == "admin"
        && count(
            c,
            "SELECT count(*) FROM clients WHERE role = 'admin' AND state = 'active' \
             AND fingerprint <> $1",
            f,
        )
        .await?
            == 0;
    let sole = c
        .query(
            "SELECT m.org AS org, m.name AS name FROM group_members m \
             JOIN groups g ON g.org = m.org AND g.name = m.name \
             WHERE m.member = $1 \
               AND EXISTS (SELECT 1 FROM group_keys k WHERE k.org = g.org \
                 AND k.name = g.name AND k.member = $1 AND k.epoch = g.epoch) \
               AND NOT EXISTS (SELECT 1 FROM group_keys o WHERE o.org = g.org \
                 AND o.name = g.name AND o.epoch = g.epoch AND o.member <> $1) \
             ORDER BY m.org, m.name",
            &[&f],
        )
        .await?
        .iter()
        .map(group_ref)
        .collect::<StoreResult<Vec<_>>>()?;
    let memberships = c
        .query(
            "SELECT org, name FROM group_members WHERE member = $1 ORDER BY org, name",
            &[&f],
        )
        .await?
        .iter()
        .map(group_ref)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Some(ClientDependents {
        owned_deposits: counted(
            c,
            "SELECT count(*) FROM deposits WHERE owner = $1",
            "SELECT name FROM deposits WHERE owner = $1 ORDER BY name LIMIT $2",
            f,
        )
        .await?,
        sole_key_holder_of: sole,
        last_active_admin,
        memberships,
        grants: grants_to(c, f).await?,
    }))
}

/// Deposits that grant `grantee` (stored form) access, named `OWNER:NAME`.
async fn grants_to<C: GenericClient>(c: &C, grantee: &str) -> TxResult<Counted> {
    counted(
        c,
        "SELECT count(*) FROM deposit_grants WHERE grantee = $1",
        "SELECT owner || ':' || name FROM deposit_grants WHERE grantee = $1 \
         ORDER BY owner, name LIMIT $2",
        grantee,
    )
    .await
}

pub(crate) async fn group_dependents<C: GenericClient>(
    c: &C,
    org: &OrgName,
    name: &GroupName,
) -> TxResult<Option<GroupDependents>> {
    let Some(row) = c
        .query_opt(
            "SELECT (SELECT count(*) FROM group_members m WHERE m.org = g.org \
               AND m.name = g.name) FROM groups g WHERE g.org = $1 AND g.name = $2",
            &[&org.as_str(), &name.as_str()],
        )
        .await?
    else {
        return Ok(None);
    };
    let members: i64 = row.try_get(0)?;
    let principal = Principal::Group {
        org: org.clone(),
        name: name.clone(),
    }
    .stored();
    Ok(Some(GroupDependents {
        owned_deposits: counted(
            c,
            "SELECT count(*) FROM deposits WHERE owner = $1",
            "SELECT name FROM deposits WHERE owner = $1 ORDER BY name LIMIT $2",
            &principal,
        )
        .await?,
        grants: grants_to(c, &principal).await?,
        members: u64::try_from(members).unwrap_or(0),
    }))
}

fn read_error(e: TxError) -> StoreError {
    match e {
        TxError::Store(e) => e,
        TxError::Db(e) => store_error(e),
    }
}

/// Runs one dependents query on a read-only REPEATABLE READ snapshot.
macro_rules! in_snapshot {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut client = $store.pool.primary().get().await.map_err(pool_error)?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(store_error)?;
        let $tx = &*tx;
        let r = $body.await.map_err(read_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(r)
    }};
}

#[async_trait]
impl LifecycleStore for PostgresStore {
    async fn list_clients_page(&self, q: ClientListing<'_>) -> StoreResult<Vec<ClientRecord>> {
        let (after_org, after_at, after_fp) = match q.after {
            Some(c) => (
                Some(c.org.as_str()),
                Some(c.created_at.unix_millis()),
                Some(c.fingerprint.as_str()),
            ),
            None => (None, None, None),
        };
        query(
            &self.pool,
            concat!(
                "SELECT ",
                client_cols!(),
                " FROM clients WHERE ($1::text IS NULL OR org = $1) \
                   AND ($2::text IS NULL OR state = $2) \
                   AND ($3::text IS NULL OR (org, created_at, fingerprint) > ($3, $4, $5)) \
                 ORDER BY org, created_at, fingerprint LIMIT $6"
            ),
            &[
                &q.org.map(|o| o.as_str()),
                &q.state.map(|s| s.as_str()),
                &after_org,
                &after_at,
                &after_fp,
                &i64::from(q.limit),
            ],
        )
        .await?
        .iter()
        .map(rows::client)
        .collect()
    }

    async fn list_unused_tokens(&self, org: &OrgName) -> StoreResult<Vec<RegistrationTokenRecord>> {
        query(
            &self.pool,
            "SELECT hash, org, created_by, created_at, expires_at FROM registration_tokens \
             WHERE org = $1 AND used_at IS NULL ORDER BY created_at, hash",
            &[&org.as_str()],
        )
        .await?
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
        in_snapshot!(self, |tx| org_dependents(tx, org))
    }

    async fn client_dependents(
        &self,
        fp: &ClientFingerprint,
    ) -> StoreResult<Option<ClientDependents>> {
        in_snapshot!(self, |tx| client_dependents(tx, fp))
    }

    async fn group_dependents(
        &self,
        org: &OrgName,
        name: &GroupName,
    ) -> StoreResult<Option<GroupDependents>> {
        in_snapshot!(self, |tx| group_dependents(tx, org, name))
    }
}
