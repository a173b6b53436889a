//! Read queries, one function per `Store` read, on pooled connections with cached prepared
//! statements. Single statements run on their own (autocommit); reads of several statements
//! (a group with its epochs and members) run in one read-only REPEATABLE READ transaction so
//! they see one snapshot. Names compare as bytes: the columns are `COLLATE "C"`.

use super::errors::{Class, classify, store_error};
use super::route::Reads as Pool;
use super::rows::{self, int};
use keysafe_core::store::{
    ClientRecord, DepositKey, DepositListing, DepositRecord, GrantRecord, GroupMemberRecord,
    GroupRecord, KekRecord, KekUsage, MemberGroup, OrgRecord, StoreError, StoreResult, VersionMeta,
    VersionRecord, WrappedId, WrappedKeyRecord, WrappedKind, WrappedRow,
};
use keysafe_proto::api::ClientState;
use keysafe_proto::{ClientFingerprint, DepositVersion, GroupName, OrgName, Principal};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs one read on a connection the route chooses. A connection that breaks under it (its
/// server went away: a failover) is dropped and the read runs once more on a fresh one, which
/// the route takes from a standby if no primary is reachable.
pub(crate) async fn query(pool: &Pool, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
    let mut retried = false;
    loop {
        let client = pool.read_conn().await?;
        let r = async {
            let st = client.prepare_cached(sql).await?;
            client.query(&st, params).await
        }
        .await;
        match r {
            Ok(rows) => return Ok(rows),
            Err(e) if !retried && classify(&e) == Class::Connection => {
                drop(deadpool_postgres::Object::take(client));
                pool.lost_primary();
                retried = true;
            }
            Err(e) => return Err(store_error(e)),
        }
    }
}

pub(crate) async fn query_opt(
    pool: &Pool,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Option<Row>> {
    let rows = query(pool, sql, params).await?;
    if rows.len() > 1 {
        return Err(StoreError::Backend(
            "a read expected one row and got more".into(),
        ));
    }
    Ok(rows.into_iter().next())
}

/// The deposit header columns, as a macro so the queries below stay `&'static str`.
macro_rules! deposit_cols {
    () => {
        "d.org, d.owner, d.name, d.current_version, d.current_size, d.deleted, d.acl_serial, \
         d.created_at, d.updated_at, d.mac, \
         COALESCE((SELECT max(n.version) FROM deposit_versions n \
           WHERE n.owner = d.owner AND n.name = d.name), 0) AS newest_version"
    };
}

/// Columns are always named, never `*`: a statement prepared by a node of an older version
/// would fail ("cached plan must not change result type") once a newer node's migration adds a
/// column.
macro_rules! org_cols {
    () => {
        "name, contacts, auth_mode, auth_hash, created_at, updated_at"
    };
}

macro_rules! client_cols {
    () => {
        "fingerprint, org, name, state, role, cert_der, recipient, token_counter, token_hash, \
         token_recent, token_rotated_at, token_confirmed, token_kek_version, token_salt, \
         last_seen_at, state_reason, created_at, updated_at, mac"
    };
}
pub(crate) use client_cols;

/// One past the largest character a deposit name may contain ('z' is 0x7a), so that
/// `name >= p AND name < p || '{'` selects the names starting with `p` through the primary
/// key's index; `starts_with` then makes the match exact whatever the prefix holds.
const PREFIX_END: &str = "{";

pub(crate) async fn load_keks(pool: &Pool) -> StoreResult<Vec<KekRecord>> {
    query(
        pool,
        "SELECT seal, version, wrapped, created_at FROM keyring ORDER BY version, seal",
        &[],
    )
    .await?
    .iter()
    .map(rows::kek)
    .collect()
}

pub(crate) async fn get_org(pool: &Pool, name: &OrgName) -> StoreResult<Option<OrgRecord>> {
    query_opt(
        pool,
        concat!("SELECT ", org_cols!(), " FROM orgs WHERE name = $1"),
        &[&name.as_str()],
    )
    .await?
    .as_ref()
    .map(rows::org)
    .transpose()
}

pub(crate) async fn list_orgs(pool: &Pool) -> StoreResult<Vec<OrgRecord>> {
    query(
        pool,
        concat!("SELECT ", org_cols!(), " FROM orgs ORDER BY name"),
        &[],
    )
    .await?
    .iter()
    .map(rows::org)
    .collect()
}

pub(crate) async fn get_client(
    pool: &Pool,
    fp: &ClientFingerprint,
) -> StoreResult<Option<ClientRecord>> {
    query_opt(
        pool,
        concat!(
            "SELECT ",
            client_cols!(),
            " FROM clients WHERE fingerprint = $1"
        ),
        &[&fp.as_str()],
    )
    .await?
    .as_ref()
    .map(rows::client)
    .transpose()
}

pub(crate) async fn list_clients(
    pool: &Pool,
    org: Option<&OrgName>,
    state: Option<ClientState>,
) -> StoreResult<Vec<ClientRecord>> {
    query(
        pool,
        concat!(
            "SELECT ",
            client_cols!(),
            " FROM clients WHERE ($1::text IS NULL OR org = $1) \
               AND ($2::text IS NULL OR state = $2) \
             ORDER BY org, created_at, fingerprint"
        ),
        &[&org.map(|o| o.as_str()), &state.map(|s| s.as_str())],
    )
    .await?
    .iter()
    .map(rows::client)
    .collect()
}

pub(crate) async fn get_deposit(
    pool: &Pool,
    key: &DepositKey,
) -> StoreResult<Option<DepositRecord>> {
    query_opt(
        pool,
        concat!(
            "SELECT ",
            deposit_cols!(),
            " FROM deposits d WHERE d.owner = $1 AND d.name = $2"
        ),
        &[&key.owner.stored(), &key.name.as_str()],
    )
    .await?
    .as_ref()
    .map(rows::deposit)
    .transpose()
}

pub(crate) async fn get_version(
    pool: &Pool,
    key: &DepositKey,
    version: Option<DepositVersion>,
) -> StoreResult<Option<(DepositRecord, VersionRecord)>> {
    let row = query_opt(
        pool,
        concat!(
            "SELECT ",
            deposit_cols!(),
            ", v.version AS v_version, v.size AS v_size, v.creator AS v_creator, \
               v.created_at AS v_created_at, v.encoding AS v_encoding, \
               v.kek_version AS v_kek_version, v.wrapped_dek AS v_wrapped_dek, \
               v.ciphertext AS v_ciphertext \
             FROM deposits d JOIN deposit_versions v \
               ON v.owner = d.owner AND v.name = d.name \
              AND v.version = COALESCE($3::bigint, d.current_version) \
             WHERE d.owner = $1 AND d.name = $2"
        ),
        &[
            &key.owner.stored(),
            &key.name.as_str(),
            &version.map(|v| int(v.get())),
        ],
    )
    .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((rows::deposit(&r)?, rows::version_record(&r)?))),
    }
}

pub(crate) async fn list_deposits(
    pool: &Pool,
    q: DepositListing<'_>,
) -> StoreResult<Vec<DepositRecord>> {
    query(
        pool,
        concat!(
            "SELECT ",
            deposit_cols!(),
            " FROM deposits d \
             WHERE d.owner = $1 AND d.name >= $2 AND d.name < $3 AND starts_with(d.name, $2) \
               AND ($4::text IS NULL OR d.name > $4) AND ($5 OR NOT d.deleted) \
             ORDER BY d.name LIMIT $6"
        ),
        &[
            &q.owner.stored(),
            &q.prefix,
            &format!("{}{PREFIX_END}", q.prefix),
            &q.after,
            &q.include_deleted,
            &i64::from(q.limit),
        ],
    )
    .await?
    .iter()
    .map(rows::deposit)
    .collect()
}

pub(crate) async fn list_versions(pool: &Pool, key: &DepositKey) -> StoreResult<Vec<VersionMeta>> {
    query(
        pool,
        "SELECT version AS v_version, size AS v_size, creator AS v_creator, \
                created_at AS v_created_at, encoding AS v_encoding \
         FROM deposit_versions WHERE owner = $1 AND name = $2 ORDER BY version",
        &[&key.owner.stored(), &key.name.as_str()],
    )
    .await?
    .iter()
    .map(rows::version_meta)
    .collect()
}

pub(crate) async fn get_grants(pool: &Pool, key: &DepositKey) -> StoreResult<Vec<GrantRecord>> {
    query(
        pool,
        "SELECT grantee AS g_grantee, access AS g_access, granted_by AS g_granted_by, \
                granted_at AS g_granted_at, mac AS g_mac \
         FROM deposit_grants WHERE owner = $1 AND name = $2 ORDER BY granted_at, grantee",
        &[&key.owner.stored(), &key.name.as_str()],
    )
    .await?
    .iter()
    .map(rows::grant)
    .collect()
}

pub(crate) async fn list_shared(
    pool: &Pool,
    grantees: &[Principal],
) -> StoreResult<Vec<(DepositRecord, GrantRecord)>> {
    let stored: Vec<String> = grantees.iter().map(Principal::stored).collect();
    query(
        pool,
        concat!(
            "SELECT ",
            deposit_cols!(),
            ", g.grantee AS g_grantee, g.access AS g_access, g.granted_by AS g_granted_by, \
               g.granted_at AS g_granted_at, g.mac AS g_mac \
             FROM deposit_grants g JOIN deposits d ON d.owner = g.owner AND d.name = g.name \
             WHERE g.grantee = ANY($1::text[]) AND NOT d.deleted \
             ORDER BY d.owner, d.name, g.grantee"
        ),
        &[&stored],
    )
    .await?
    .iter()
    .map(|r| Ok((rows::deposit(r)?, rows::grant(r)?)))
    .collect()
}

/// A group row with its epochs and members, read on `client` (inside the caller's snapshot).
async fn group_from_row(client: &impl GenericClient, row: &Row) -> StoreResult<GroupRecord> {
    let org = rows::org_name(row, "org")?;
    let name = rows::group_name(row, "name")?;
    let epoch_rows = client
        .query(
            "SELECT epoch, recipient, mac FROM group_epochs WHERE org = $1 AND name = $2 \
             ORDER BY epoch",
            &[&org.as_str(), &name.as_str()],
        )
        .await
        .map_err(store_error)?;
    let mut epochs = Vec::with_capacity(epoch_rows.len());
    let mut epoch_macs = Vec::with_capacity(epoch_rows.len());
    for r in &epoch_rows {
        epochs.push((
            rows::unsigned(r, "epoch")?,
            rows::col::<String>(r, "recipient")?,
        ));
        epoch_macs.push(rows::col::<Option<Vec<u8>>>(r, "mac")?);
    }
    let member_rows = client
        .query(
            "SELECT m.member AS member, m.mac AS mac, k.epoch AS epoch FROM group_members m \
             LEFT JOIN group_keys k ON k.org = m.org AND k.name = m.name AND k.member = m.member \
             WHERE m.org = $1 AND m.name = $2 ORDER BY m.added_at, m.member, k.epoch",
            &[&org.as_str(), &name.as_str()],
        )
        .await
        .map_err(store_error)?;
    let mut members: Vec<GroupMemberRecord> = Vec::new();
    for r in &member_rows {
        let fp = rows::fingerprint(r, "member")?;
        let epoch: Option<i64> = rows::col(r, "epoch")?;
        if members.last().is_none_or(|m| m.fingerprint != fp) {
            members.push(GroupMemberRecord {
                fingerprint: fp,
                epochs: Vec::new(),
                mac: rows::col(r, "mac")?,
            });
        }
        if let (Some(e), Some(m)) = (epoch, members.last_mut()) {
            m.epochs
                .push(u64::try_from(e).map_err(|_| rows::corrupt("epoch"))?);
        }
    }
    Ok(GroupRecord {
        org,
        name,
        epoch: rows::unsigned(row, "epoch")?,
        epochs,
        epoch_macs,
        members,
        created_at: rows::ts(row, "created_at")?,
        updated_at: rows::ts(row, "updated_at")?,
    })
}

/// Groups matching the filters, each with its epochs and members, from one snapshot.
async fn groups_where(
    pool: &Pool,
    org: Option<&str>,
    name: Option<&str>,
    member: Option<&str>,
) -> StoreResult<Vec<GroupRecord>> {
    let mut client = pool.read_conn().await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(store_error)?;
    let st = tx
        .prepare_cached(
            "SELECT g.org, g.name, g.epoch, g.created_at, g.updated_at FROM groups g WHERE ($1::text IS NULL OR g.org = $1) \
               AND ($2::text IS NULL OR g.name = $2) \
               AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM group_members m \
                     WHERE m.org = g.org AND m.name = g.name AND m.member = $3)) \
             ORDER BY g.org, g.name",
        )
        .await
        .map_err(store_error)?;
    let rows = tx
        .query(&st, &[&org, &name, &member])
        .await
        .map_err(store_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(group_from_row(&*tx, r).await?);
    }
    tx.commit().await.map_err(store_error)?;
    Ok(out)
}

pub(crate) async fn get_group(
    pool: &Pool,
    org: &OrgName,
    name: &GroupName,
) -> StoreResult<Option<GroupRecord>> {
    Ok(
        groups_where(pool, Some(org.as_str()), Some(name.as_str()), None)
            .await?
            .pop(),
    )
}

pub(crate) async fn list_groups(
    pool: &Pool,
    org: Option<&OrgName>,
    member: Option<&ClientFingerprint>,
) -> StoreResult<Vec<GroupRecord>> {
    groups_where(
        pool,
        org.map(|o| o.as_str()),
        None,
        member.map(|m| m.as_str()),
    )
    .await
}

pub(crate) async fn group_keys(
    pool: &Pool,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
) -> StoreResult<Vec<WrappedKeyRecord>> {
    query(
        pool,
        "SELECT epoch, member, wrapped FROM group_keys \
         WHERE org = $1 AND name = $2 AND member = $3 ORDER BY epoch",
        &[&org.as_str(), &name.as_str(), &member.as_str()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(WrappedKeyRecord {
            epoch: rows::unsigned(r, "epoch")?,
            member: rows::fingerprint(r, "member")?,
            wrapped: rows::col(r, "wrapped")?,
        })
    })
    .collect()
}

pub(crate) async fn member_groups(
    pool: &Pool,
    org: &OrgName,
    member: &ClientFingerprint,
) -> StoreResult<Vec<MemberGroup>> {
    query(
        pool,
        "SELECT name, mac FROM group_members WHERE member = $2 AND org = $1 ORDER BY name",
        &[&org.as_str(), &member.as_str()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(MemberGroup {
            name: rows::group_name(r, "name")?,
            mac: rows::col(r, "mac")?,
        })
    })
    .collect()
}

/// Whether any deposit version is wrapped by a keyring version other than `current`.
async fn any_stale_version(pool: &Pool, current: u32) -> StoreResult<bool> {
    let rows = query(
        pool,
        "SELECT EXISTS (SELECT 1 FROM deposit_versions WHERE kek_version < $1) \
             OR EXISTS (SELECT 1 FROM deposit_versions WHERE kek_version > $1) AS stale",
        &[&i64::from(current)],
    )
    .await?;
    Ok(match rows.first() {
        Some(r) => rows::col(r, "stale")?,
        None => false,
    })
}

pub(crate) async fn list_stale_wrapped(
    pool: &Pool,
    kind: WrappedKind,
    current: u32,
    after: Option<&WrappedId>,
    limit: u32,
) -> StoreResult<Vec<WrappedRow>> {
    match kind {
        // Two probes of the kek_version index first: a pass with nothing to re-wrap (one runs
        // at every start) never walks the versions table in key order.
        WrappedKind::DepositVersion if !any_stale_version(pool, current).await? => Ok(Vec::new()),
        WrappedKind::DepositVersion => {
            let (owner, name, version) = match after {
                Some(WrappedId::DepositVersion { key, version, .. }) => (
                    key.owner.stored(),
                    key.name.as_str().to_owned(),
                    int(version.get()),
                ),
                _ => (String::new(), String::new(), 0),
            };
            query(
                pool,
                "SELECT d.org, v.owner, v.name, v.version, v.kek_version, v.wrapped_dek \
                 FROM deposit_versions v JOIN deposits d ON d.owner = v.owner AND d.name = v.name \
                 WHERE v.kek_version <> $1 \
                   AND (v.owner, v.name, v.version) > ($2::text, $3::text, $4::bigint) \
                 ORDER BY v.owner, v.name, v.version LIMIT $5",
                &[
                    &i64::from(current),
                    &owner,
                    &name,
                    &version,
                    &i64::from(limit),
                ],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(WrappedRow {
                    id: WrappedId::DepositVersion {
                        org: rows::org_name(row, "org")?,
                        key: DepositKey {
                            owner: rows::principal(row, "owner")?,
                            name: rows::deposit_name(row, "name")?,
                        },
                        version: rows::version(row, "version")?,
                    },
                    kek_version: rows::u32_col(row, "kek_version")?,
                    wrapped: rows::col(row, "wrapped_dek")?,
                })
            })
            .collect()
        }
        WrappedKind::AuditSigningKey => {
            let after = match after {
                Some(WrappedId::AuditSigningKey { key_id, .. }) => key_id.clone(),
                _ => String::new(),
            };
            query(
                pool,
                "SELECT key_id, public_key, kek_version, wrapped FROM audit_signing_keys \
                 WHERE kek_version <> $1 AND key_id > $2 ORDER BY key_id LIMIT $3",
                &[&i64::from(current), &after, &i64::from(limit)],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(WrappedRow {
                    id: WrappedId::AuditSigningKey {
                        key_id: rows::col(row, "key_id")?,
                        public_key: rows::col(row, "public_key")?,
                    },
                    kek_version: rows::u32_col(row, "kek_version")?,
                    wrapped: rows::col(row, "wrapped")?,
                })
            })
            .collect()
        }
        WrappedKind::ClusterTlsKey => {
            let after = match after {
                Some(WrappedId::ClusterTlsKey { fingerprint }) => fingerprint.as_str().to_owned(),
                _ => String::new(),
            };
            query(
                pool,
                "SELECT fingerprint, kek_version, wrapped_dek FROM cluster_identity \
                 WHERE kek_version <> $1 AND fingerprint > $2 ORDER BY fingerprint LIMIT $3",
                &[&i64::from(current), &after, &i64::from(limit)],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(WrappedRow {
                    id: WrappedId::ClusterTlsKey {
                        fingerprint: rows::fingerprint(row, "fingerprint")?,
                    },
                    kek_version: rows::u32_col(row, "kek_version")?,
                    wrapped: rows::col(row, "wrapped_dek")?,
                })
            })
            .collect()
        }
    }
}

pub(crate) async fn kek_usage(pool: &Pool) -> StoreResult<Vec<KekUsage>> {
    query(
        pool,
        "SELECT 0 AS kind, kek_version, COUNT(*) AS n FROM deposit_versions GROUP BY kek_version \
         UNION ALL \
         SELECT 1, kek_version, COUNT(*) FROM audit_signing_keys GROUP BY kek_version \
         UNION ALL \
         SELECT 2, kek_version, COUNT(*) FROM cluster_identity GROUP BY kek_version \
         ORDER BY 1, 2",
        &[],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(KekUsage {
            // Kinds are tagged by their place in `WrappedKind::ALL`.
            kind: usize::try_from(rows::col::<i32>(r, "kind")?)
                .ok()
                .and_then(|k| WrappedKind::ALL.get(k))
                .copied()
                .ok_or_else(|| StoreError::Backend("unknown wrapped kind".into()))?,
            kek_version: rows::u32_col(r, "kek_version")?,
            count: rows::unsigned(r, "n")?,
        })
    })
    .collect()
}
