//! Read queries, on the query-only pool.

use super::{backend_error, rows};
use keysafe_core::store::{
    ClientRecord, DepositKey, DepositListing, DepositRecord, GrantRecord, GroupMemberRecord,
    GroupRecord, KekRecord, KekUsage, OrgRecord, StoreError, StoreResult, VersionMeta,
    VersionRecord, WrappedId, WrappedKeyRecord, WrappedKind, WrappedRow,
};
use keysafe_proto::api::ClientState;
use keysafe_proto::{ClientFingerprint, DepositVersion, GroupName, OrgName, Principal};
use sqlx::SqlitePool;
use sqlx::sqlite::SqliteRow;

/// The deposit header columns, as a macro so the queries below stay `&'static str` (no
/// formatting per request on the read path).
macro_rules! deposit_cols {
    () => {
        "d.org, d.owner, d.name, d.current_version, d.current_size, d.deleted, d.acl_serial, d.created_at, d.updated_at"
    };
}

/// One past the largest character a deposit name may contain ('z' is 0x7a), so that
/// `name >= p AND name < p || '{'` selects exactly the names starting with `p`.
const PREFIX_END: &str = "{";

pub(crate) async fn load_keks(pool: &SqlitePool) -> StoreResult<Vec<KekRecord>> {
    sqlx::query("SELECT seal, version, wrapped, created_at FROM keyring ORDER BY version, seal")
        .fetch_all(pool)
        .await
        .map_err(backend_error)?
        .iter()
        .map(rows::kek)
        .collect()
}

pub(crate) async fn get_org(pool: &SqlitePool, name: &OrgName) -> StoreResult<Option<OrgRecord>> {
    sqlx::query("SELECT * FROM orgs WHERE name = ?1")
        .bind(name.as_str())
        .fetch_optional(pool)
        .await
        .map_err(backend_error)?
        .as_ref()
        .map(rows::org)
        .transpose()
}

pub(crate) async fn list_orgs(pool: &SqlitePool) -> StoreResult<Vec<OrgRecord>> {
    sqlx::query("SELECT * FROM orgs ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(backend_error)?
        .iter()
        .map(rows::org)
        .collect()
}

pub(crate) async fn get_client(
    pool: &SqlitePool,
    fp: &ClientFingerprint,
) -> StoreResult<Option<ClientRecord>> {
    sqlx::query("SELECT * FROM clients WHERE fingerprint = ?1")
        .bind(fp.as_str())
        .fetch_optional(pool)
        .await
        .map_err(backend_error)?
        .as_ref()
        .map(rows::client)
        .transpose()
}

pub(crate) async fn list_clients(
    pool: &SqlitePool,
    org: Option<&OrgName>,
    state: Option<ClientState>,
) -> StoreResult<Vec<ClientRecord>> {
    sqlx::query(
        "SELECT * FROM clients WHERE (?1 IS NULL OR org = ?1) AND (?2 IS NULL OR state = ?2) \
         ORDER BY org, created_at, fingerprint",
    )
    .bind(org.map(|o| o.as_str()))
    .bind(state.map(|s| s.as_str()))
    .fetch_all(pool)
    .await
    .map_err(backend_error)?
    .iter()
    .map(rows::client)
    .collect()
}

pub(crate) async fn get_deposit(
    pool: &SqlitePool,
    key: &DepositKey,
) -> StoreResult<Option<DepositRecord>> {
    sqlx::query(concat!(
        "SELECT ",
        deposit_cols!(),
        " FROM deposits d WHERE d.owner = ?1 AND d.name = ?2"
    ))
    .bind(key.owner.stored())
    .bind(key.name.as_str())
    .fetch_optional(pool)
    .await
    .map_err(backend_error)?
    .as_ref()
    .map(rows::deposit)
    .transpose()
}

pub(crate) async fn get_version(
    pool: &SqlitePool,
    key: &DepositKey,
    version: Option<DepositVersion>,
) -> StoreResult<Option<(DepositRecord, VersionRecord)>> {
    let version = version.map(|v| i64::try_from(v.get()).unwrap_or(i64::MAX));
    let row = sqlx::query(
        "SELECT d.org, d.owner, d.name, d.current_version, d.current_size, d.deleted, \
                d.acl_serial, d.created_at, d.updated_at, \
                v.version AS v_version, v.size AS v_size, v.creator AS v_creator, \
                v.created_at AS v_created_at, v.encoding AS v_encoding, \
                v.kek_version AS v_kek_version, \
                v.wrapped_dek AS v_wrapped_dek, v.ciphertext AS v_ciphertext \
         FROM deposits d JOIN deposit_versions v \
           ON v.owner = d.owner AND v.name = d.name \
          AND v.version = COALESCE(?3, d.current_version) \
         WHERE d.owner = ?1 AND d.name = ?2",
    )
    .bind(key.owner.stored())
    .bind(key.name.as_str())
    .bind(version)
    .fetch_optional(pool)
    .await
    .map_err(backend_error)?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((rows::deposit(&r)?, rows::version_record(&r)?))),
    }
}

pub(crate) async fn list_deposits(
    pool: &SqlitePool,
    q: DepositListing<'_>,
) -> StoreResult<Vec<DepositRecord>> {
    sqlx::query(concat!(
        "SELECT ",
        deposit_cols!(),
        " FROM deposits d \
         WHERE d.owner = ?1 AND d.name >= ?2 AND d.name < ?3 \
           AND (?4 IS NULL OR d.name > ?4) AND (?5 OR d.deleted = 0) \
         ORDER BY d.name LIMIT ?6"
    ))
    .bind(q.owner.stored())
    .bind(q.prefix)
    .bind(format!("{}{PREFIX_END}", q.prefix))
    .bind(q.after)
    .bind(q.include_deleted)
    .bind(i64::from(q.limit))
    .fetch_all(pool)
    .await
    .map_err(backend_error)?
    .iter()
    .map(rows::deposit)
    .collect()
}

pub(crate) async fn list_versions(
    pool: &SqlitePool,
    key: &DepositKey,
) -> StoreResult<Vec<VersionMeta>> {
    sqlx::query(
        "SELECT version AS v_version, size AS v_size, creator AS v_creator, \
                created_at AS v_created_at, encoding AS v_encoding \
         FROM deposit_versions WHERE owner = ?1 AND name = ?2 ORDER BY version",
    )
    .bind(key.owner.stored())
    .bind(key.name.as_str())
    .fetch_all(pool)
    .await
    .map_err(backend_error)?
    .iter()
    .map(rows::version_meta)
    .collect()
}

pub(crate) async fn get_grants(
    pool: &SqlitePool,
    key: &DepositKey,
) -> StoreResult<Vec<GrantRecord>> {
    sqlx::query(
        "SELECT grantee AS g_grantee, access AS g_access, granted_by AS g_granted_by, \
                granted_at AS g_granted_at \
         FROM deposit_grants WHERE owner = ?1 AND name = ?2 ORDER BY granted_at, grantee",
    )
    .bind(key.owner.stored())
    .bind(key.name.as_str())
    .fetch_all(pool)
    .await
    .map_err(backend_error)?
    .iter()
    .map(rows::grant)
    .collect()
}

pub(crate) async fn list_shared(
    pool: &SqlitePool,
    grantees: &[Principal],
) -> StoreResult<Vec<(DepositRecord, GrantRecord)>> {
    let stored: Vec<String> = grantees.iter().map(Principal::stored).collect();
    let json = serde_json::to_string(&stored).map_err(|e| StoreError::Backend(e.to_string()))?;
    let rows = sqlx::query(concat!(
        "SELECT ",
        deposit_cols!(),
        ", g.grantee AS g_grantee, g.access AS g_access, g.granted_by AS g_granted_by, \
           g.granted_at AS g_granted_at \
         FROM deposit_grants g JOIN deposits d ON d.owner = g.owner AND d.name = g.name \
         WHERE g.grantee IN (SELECT value FROM json_each(?1)) AND d.deleted = 0 \
         ORDER BY d.owner, d.name, g.grantee"
    ))
    .bind(json)
    .fetch_all(pool)
    .await
    .map_err(backend_error)?;
    rows.iter()
        .map(|r| Ok((rows::deposit(r)?, rows::grant(r)?)))
        .collect()
}

async fn group_from_row(pool: &SqlitePool, row: &SqliteRow) -> StoreResult<GroupRecord> {
    let org = rows::org_name(row, "org")?;
    let name = GroupName::parse(&rows::col::<String>(row, "name")?)
        .map_err(|_| rows::corrupt("group name"))?;
    let epochs = sqlx::query(
        "SELECT epoch, recipient FROM group_epochs WHERE org = ?1 AND name = ?2 ORDER BY epoch",
    )
    .bind(org.as_str())
    .bind(name.as_str())
    .fetch_all(pool)
    .await
    .map_err(backend_error)?
    .iter()
    .map(|r| {
        Ok((
            rows::unsigned(r, "epoch")?,
            rows::col::<String>(r, "recipient")?,
        ))
    })
    .collect::<StoreResult<Vec<_>>>()?;
    let member_rows = sqlx::query(
        "SELECT m.member AS member, k.epoch AS epoch FROM group_members m \
         LEFT JOIN group_keys k ON k.org = m.org AND k.name = m.name AND k.member = m.member \
         WHERE m.org = ?1 AND m.name = ?2 ORDER BY m.added_at, m.member, k.epoch",
    )
    .bind(org.as_str())
    .bind(name.as_str())
    .fetch_all(pool)
    .await
    .map_err(backend_error)?;
    let mut members: Vec<GroupMemberRecord> = Vec::new();
    for r in &member_rows {
        let fp = rows::fingerprint(r, "member")?;
        let epoch: Option<i64> = rows::col(r, "epoch")?;
        if members.last().is_none_or(|m| m.fingerprint != fp) {
            members.push(GroupMemberRecord {
                fingerprint: fp,
                epochs: Vec::new(),
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
        members,
        created_at: rows::ts(row, "created_at")?,
        updated_at: rows::ts(row, "updated_at")?,
    })
}

pub(crate) async fn get_group(
    pool: &SqlitePool,
    org: &OrgName,
    name: &GroupName,
) -> StoreResult<Option<GroupRecord>> {
    let row = sqlx::query("SELECT * FROM groups WHERE org = ?1 AND name = ?2")
        .bind(org.as_str())
        .bind(name.as_str())
        .fetch_optional(pool)
        .await
        .map_err(backend_error)?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(group_from_row(pool, &r).await?)),
    }
}

pub(crate) async fn list_groups(
    pool: &SqlitePool,
    org: Option<&OrgName>,
    member: Option<&ClientFingerprint>,
) -> StoreResult<Vec<GroupRecord>> {
    let rows = sqlx::query(
        "SELECT g.* FROM groups g WHERE (?1 IS NULL OR g.org = ?1) AND (?2 IS NULL OR EXISTS \
           (SELECT 1 FROM group_members m WHERE m.org = g.org AND m.name = g.name \
              AND m.member = ?2)) \
         ORDER BY g.org, g.name",
    )
    .bind(org.map(|o| o.as_str()))
    .bind(member.map(|m| m.as_str()))
    .fetch_all(pool)
    .await
    .map_err(backend_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(group_from_row(pool, r).await?);
    }
    Ok(out)
}

pub(crate) async fn group_keys(
    pool: &SqlitePool,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
) -> StoreResult<Vec<WrappedKeyRecord>> {
    sqlx::query(
        "SELECT epoch, member, wrapped FROM group_keys \
         WHERE org = ?1 AND name = ?2 AND member = ?3 ORDER BY epoch",
    )
    .bind(org.as_str())
    .bind(name.as_str())
    .bind(member.as_str())
    .fetch_all(pool)
    .await
    .map_err(backend_error)?
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

pub(crate) async fn list_stale_wrapped(
    pool: &SqlitePool,
    kind: WrappedKind,
    current: u32,
    after: Option<&WrappedId>,
    limit: u32,
) -> StoreResult<Vec<WrappedRow>> {
    match kind {
        WrappedKind::DepositVersion => {
            let (owner, name, version) = match after {
                Some(WrappedId::DepositVersion { key, version, .. }) => (
                    key.owner.stored(),
                    key.name.as_str().to_owned(),
                    i64::try_from(version.get()).unwrap_or(i64::MAX),
                ),
                _ => (String::new(), String::new(), 0),
            };
            sqlx::query(
                "SELECT d.org, v.owner, v.name, v.version, v.kek_version, v.wrapped_dek \
                 FROM deposit_versions v JOIN deposits d ON d.owner = v.owner AND d.name = v.name \
                 WHERE v.kek_version != ?1 AND (v.owner, v.name, v.version) > (?2, ?3, ?4) \
                 ORDER BY v.owner, v.name, v.version LIMIT ?5",
            )
            .bind(i64::from(current))
            .bind(owner)
            .bind(name)
            .bind(version)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(backend_error)?
            .iter()
            .map(|row| {
                use sqlx::Row;
                let v: i64 = row.try_get("version").map_err(backend_error)?;
                let version = u64::try_from(v)
                    .ok()
                    .and_then(|v| DepositVersion::new(v).ok())
                    .ok_or_else(|| StoreError::Corrupt("version".into()))?;
                let kek: i64 = row.try_get("kek_version").map_err(backend_error)?;
                Ok(WrappedRow {
                    id: WrappedId::DepositVersion {
                        org: rows::org_name(row, "org")?,
                        key: DepositKey {
                            owner: rows::principal(row, "owner")?,
                            name: rows::deposit_name(row, "name")?,
                        },
                        version,
                    },
                    kek_version: u32::try_from(kek)
                        .map_err(|_| StoreError::Corrupt("kek_version".into()))?,
                    wrapped: row.try_get("wrapped_dek").map_err(backend_error)?,
                })
            })
            .collect()
        }
        WrappedKind::AuditSigningKey => {
            let after = match after {
                Some(WrappedId::AuditSigningKey { key_id, .. }) => key_id.clone(),
                _ => String::new(),
            };
            let rows: Vec<(String, Vec<u8>, i64, Vec<u8>)> = sqlx::query_as(
                "SELECT key_id, public_key, kek_version, wrapped FROM audit_signing_keys \
                 WHERE kek_version != ?1 AND key_id > ?2 ORDER BY key_id LIMIT ?3",
            )
            .bind(i64::from(current))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(backend_error)?;
            rows.into_iter()
                .map(|(key_id, public_key, kek, wrapped)| {
                    Ok(WrappedRow {
                        id: WrappedId::AuditSigningKey { key_id, public_key },
                        kek_version: u32::try_from(kek)
                            .map_err(|_| StoreError::Corrupt("kek_version".into()))?,
                        wrapped,
                    })
                })
                .collect()
        }
        WrappedKind::ClusterTlsKey => {
            let after = match after {
                Some(WrappedId::ClusterTlsKey { fingerprint }) => fingerprint.as_str().to_owned(),
                _ => String::new(),
            };
            let rows = sqlx::query(
                "SELECT fingerprint, kek_version, wrapped_dek FROM cluster_identity \
                 WHERE kek_version != ?1 AND fingerprint > ?2 ORDER BY fingerprint LIMIT ?3",
            )
            .bind(i64::from(current))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(backend_error)?;
            rows.iter()
                .map(|row| {
                    let kek: i64 = rows::col(row, "kek_version")?;
                    Ok(WrappedRow {
                        id: WrappedId::ClusterTlsKey {
                            fingerprint: rows::fingerprint(row, "fingerprint")?,
                        },
                        kek_version: u32::try_from(kek)
                            .map_err(|_| StoreError::Corrupt("kek_version".into()))?,
                        wrapped: rows::col(row, "wrapped_dek")?,
                    })
                })
                .collect()
        }
    }
}

pub(crate) async fn kek_usage(pool: &SqlitePool) -> StoreResult<Vec<KekUsage>> {
    // Kinds are tagged by their place in `WrappedKind::ALL`, which is also the order answered.
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT 0, kek_version, COUNT(*) FROM deposit_versions GROUP BY kek_version \
         UNION ALL SELECT 1, kek_version, COUNT(*) FROM audit_signing_keys \
         GROUP BY kek_version \
         UNION ALL SELECT 2, kek_version, COUNT(*) FROM cluster_identity \
         GROUP BY kek_version ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .map_err(backend_error)?;
    rows.into_iter()
        .map(|(kind, v, n)| {
            Ok(KekUsage {
                kind: usize::try_from(kind)
                    .ok()
                    .and_then(|k| WrappedKind::ALL.get(k))
                    .copied()
                    .ok_or_else(|| StoreError::Backend("unknown wrapped kind".into()))?,
                kek_version: u32::try_from(v)
                    .map_err(|_| StoreError::Corrupt("kek_version".into()))?,
                count: u64::try_from(n).unwrap_or(0),
            })
        })
        .collect()
}

pub(crate) async fn member_groups(
    pool: &SqlitePool,
    org: &OrgName,
    member: &ClientFingerprint,
) -> StoreResult<Vec<GroupName>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM group_members WHERE member = ?2 AND org = ?1 ORDER BY name",
    )
    .bind(org.as_str())
    .bind(member.as_str())
    .fetch_all(pool)
    .await
    .map_err(backend_error)?;
    rows.into_iter()
        .map(|(n,)| GroupName::parse(&n).map_err(|_| rows::corrupt("group name")))
        .collect()
}
