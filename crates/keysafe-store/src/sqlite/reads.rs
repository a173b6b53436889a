//! Read queries, on a query-only connection. Every function here is synchronous: the store runs
//! point reads on the calling thread and the others on the blocking pool (`conn.rs`).

use super::conn::{all, one};
use super::rows;
use keysafe_core::store::{
    ClientRecord, DepositKey, DepositRecord, GrantRecord, GroupMemberRecord, GroupRecord,
    KekRecord, KekUsage, MemberGroup, OrgRecord, StoreError, StoreResult, VersionMeta,
    VersionRecord, WrappedId, WrappedKeyRecord, WrappedKind, WrappedRow,
};
use keysafe_proto::api::ClientState;
use keysafe_proto::{ClientFingerprint, DepositVersion, GroupName, OrgName, Principal};
use rusqlite::{Connection, params};

/// The deposit header columns, as a macro so the queries below stay `&'static str` (no
/// formatting per request on the read path, and one cached statement each).
macro_rules! deposit_cols {
    () => {
        "d.org, d.owner, d.name, d.current_version, d.current_size, d.deleted, d.acl_serial, d.created_at, d.updated_at, d.mac, \
         COALESCE((SELECT max(n.version) FROM deposit_versions n WHERE n.owner = d.owner AND n.name = d.name), 0) AS newest_version"
    };
}

/// One past the largest character a deposit name may contain ('z' is 0x7a), so that
/// `name >= p AND name < p || '{'` selects exactly the names starting with `p`.
const PREFIX_END: &str = "{";

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn load_keks(conn: &Connection) -> StoreResult<Vec<KekRecord>> {
    all(
        conn,
        "SELECT seal, version, wrapped, created_at FROM keyring ORDER BY version, seal",
        [],
        rows::kek,
    )
}

pub(crate) fn get_org(conn: &Connection, name: &OrgName) -> StoreResult<Option<OrgRecord>> {
    one(
        conn,
        "SELECT * FROM orgs WHERE name = ?1",
        [name.as_str()],
        rows::org,
    )
}

pub(crate) fn list_orgs(conn: &Connection) -> StoreResult<Vec<OrgRecord>> {
    all(conn, "SELECT * FROM orgs ORDER BY name", [], rows::org)
}

pub(crate) fn get_client(
    conn: &Connection,
    fp: &ClientFingerprint,
) -> StoreResult<Option<ClientRecord>> {
    one(
        conn,
        "SELECT * FROM clients WHERE fingerprint = ?1",
        [fp.as_str()],
        rows::client,
    )
}

pub(crate) fn list_clients(
    conn: &Connection,
    org: Option<&str>,
    state: Option<&str>,
) -> StoreResult<Vec<ClientRecord>> {
    all(
        conn,
        "SELECT * FROM clients WHERE (?1 IS NULL OR org = ?1) AND (?2 IS NULL OR state = ?2) \
         ORDER BY org, created_at, fingerprint",
        params![org, state],
        rows::client,
    )
}

pub(crate) fn get_deposit(
    conn: &Connection,
    key: &DepositKey,
) -> StoreResult<Option<DepositRecord>> {
    one(
        conn,
        concat!(
            "SELECT ",
            deposit_cols!(),
            " FROM deposits d WHERE d.owner = ?1 AND d.name = ?2"
        ),
        params![key.owner.stored(), key.name.as_str()],
        rows::deposit,
    )
}

pub(crate) fn get_version(
    conn: &Connection,
    key: &DepositKey,
    version: Option<DepositVersion>,
) -> StoreResult<Option<(DepositRecord, VersionRecord)>> {
    let version = version.map(|v| int(v.get()));
    one(
        conn,
        "SELECT d.org, d.owner, d.name, d.current_version, d.current_size, d.deleted, \
                d.acl_serial, d.created_at, d.updated_at, d.mac, \
                COALESCE((SELECT max(n.version) FROM deposit_versions n \
                  WHERE n.owner = d.owner AND n.name = d.name), 0) AS newest_version, \
                v.version AS v_version, v.size AS v_size, v.creator AS v_creator, \
                v.created_at AS v_created_at, v.encoding AS v_encoding, \
                v.kek_version AS v_kek_version, \
                v.wrapped_dek AS v_wrapped_dek, v.ciphertext AS v_ciphertext \
         FROM deposits d JOIN deposit_versions v \
           ON v.owner = d.owner AND v.name = d.name \
          AND v.version = COALESCE(?3, d.current_version) \
         WHERE d.owner = ?1 AND d.name = ?2",
        params![key.owner.stored(), key.name.as_str(), version],
        |r| Ok((rows::deposit(r)?, rows::version_record(r)?)),
    )
}

/// A deposit listing with owned arguments, so it can move to the blocking pool.
pub(crate) struct Listing {
    pub owner: String,
    pub prefix: String,
    pub after: Option<String>,
    pub limit: u32,
    pub include_deleted: bool,
}

pub(crate) fn list_deposits(conn: &Connection, q: &Listing) -> StoreResult<Vec<DepositRecord>> {
    all(
        conn,
        concat!(
            "SELECT ",
            deposit_cols!(),
            " FROM deposits d \
             WHERE d.owner = ?1 AND d.name >= ?2 AND d.name < ?3 \
               AND (?4 IS NULL OR d.name > ?4) AND (?5 OR d.deleted = 0) \
             ORDER BY d.name LIMIT ?6"
        ),
        params![
            q.owner,
            q.prefix,
            format!("{}{PREFIX_END}", q.prefix),
            q.after,
            q.include_deleted,
            i64::from(q.limit)
        ],
        rows::deposit,
    )
}

pub(crate) fn list_versions(
    conn: &Connection,
    owner: &str,
    name: &str,
) -> StoreResult<Vec<VersionMeta>> {
    all(
        conn,
        "SELECT version AS v_version, size AS v_size, creator AS v_creator, \
                created_at AS v_created_at, encoding AS v_encoding \
         FROM deposit_versions WHERE owner = ?1 AND name = ?2 ORDER BY version",
        params![owner, name],
        rows::version_meta,
    )
}

pub(crate) fn get_grants(conn: &Connection, key: &DepositKey) -> StoreResult<Vec<GrantRecord>> {
    all(
        conn,
        "SELECT grantee AS g_grantee, access AS g_access, granted_by AS g_granted_by, \
                granted_at AS g_granted_at, mac AS g_mac \
         FROM deposit_grants WHERE owner = ?1 AND name = ?2 ORDER BY granted_at, grantee",
        params![key.owner.stored(), key.name.as_str()],
        rows::grant,
    )
}

pub(crate) fn list_shared(
    conn: &Connection,
    grantees: &[String],
) -> StoreResult<Vec<(DepositRecord, GrantRecord)>> {
    let json = serde_json::to_string(grantees).map_err(|e| StoreError::Backend(e.to_string()))?;
    all(
        conn,
        concat!(
            "SELECT ",
            deposit_cols!(),
            ", g.grantee AS g_grantee, g.access AS g_access, g.granted_by AS g_granted_by, \
               g.granted_at AS g_granted_at, g.mac AS g_mac \
             FROM deposit_grants g JOIN deposits d ON d.owner = g.owner AND d.name = g.name \
             WHERE g.grantee IN (SELECT value FROM json_each(?1)) AND d.deleted = 0 \
             ORDER BY d.owner, d.name, g.grantee"
        ),
        [json],
        |r| Ok((rows::deposit(r)?, rows::grant(r)?)),
    )
}

/// A group's header row, before its epochs and members are read.
struct GroupHead {
    org: OrgName,
    name: GroupName,
    epoch: u64,
    created_at: keysafe_proto::Timestamp,
    updated_at: keysafe_proto::Timestamp,
}

fn group_head(row: &rusqlite::Row<'_>) -> StoreResult<GroupHead> {
    Ok(GroupHead {
        org: rows::org_name(row, "org")?,
        name: GroupName::parse(&rows::col::<String>(row, "name")?)
            .map_err(|_| rows::corrupt("group name"))?,
        epoch: rows::unsigned(row, "epoch")?,
        created_at: rows::ts(row, "created_at")?,
        updated_at: rows::ts(row, "updated_at")?,
    })
}

fn group_from_head(conn: &Connection, head: GroupHead) -> StoreResult<GroupRecord> {
    let epoch_rows = all(
        conn,
        "SELECT epoch, recipient, mac FROM group_epochs WHERE org = ?1 AND name = ?2 \
         ORDER BY epoch",
        params![head.org.as_str(), head.name.as_str()],
        |r| {
            Ok((
                (
                    rows::unsigned(r, "epoch")?,
                    rows::col::<String>(r, "recipient")?,
                ),
                rows::col::<Option<Vec<u8>>>(r, "mac")?,
            ))
        },
    )?;
    let (epochs, epoch_macs): (Vec<_>, Vec<_>) = epoch_rows.into_iter().unzip();
    let member_rows = all(
        conn,
        "SELECT m.member AS member, m.mac AS mac, k.epoch AS epoch FROM group_members m \
         LEFT JOIN group_keys k ON k.org = m.org AND k.name = m.name AND k.member = m.member \
         WHERE m.org = ?1 AND m.name = ?2 ORDER BY m.added_at, m.member, k.epoch",
        params![head.org.as_str(), head.name.as_str()],
        |r| {
            Ok((
                rows::fingerprint(r, "member")?,
                rows::col::<Option<Vec<u8>>>(r, "mac")?,
                rows::col::<Option<i64>>(r, "epoch")?,
            ))
        },
    )?;
    let mut members: Vec<GroupMemberRecord> = Vec::new();
    for (fp, mac, epoch) in member_rows {
        if members.last().is_none_or(|m| m.fingerprint != fp) {
            members.push(GroupMemberRecord {
                fingerprint: fp,
                epochs: Vec::new(),
                mac,
            });
        }
        if let (Some(e), Some(m)) = (epoch, members.last_mut()) {
            m.epochs
                .push(u64::try_from(e).map_err(|_| rows::corrupt("epoch"))?);
        }
    }
    Ok(GroupRecord {
        org: head.org,
        name: head.name,
        epoch: head.epoch,
        epochs,
        epoch_macs,
        members,
        created_at: head.created_at,
        updated_at: head.updated_at,
    })
}

pub(crate) fn get_group(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
) -> StoreResult<Option<GroupRecord>> {
    let head = one(
        conn,
        "SELECT * FROM groups WHERE org = ?1 AND name = ?2",
        params![org.as_str(), name.as_str()],
        group_head,
    )?;
    head.map(|h| group_from_head(conn, h)).transpose()
}

pub(crate) fn list_groups(
    conn: &Connection,
    org: Option<&str>,
    member: Option<&str>,
) -> StoreResult<Vec<GroupRecord>> {
    let heads = all(
        conn,
        "SELECT g.* FROM groups g WHERE (?1 IS NULL OR g.org = ?1) AND (?2 IS NULL OR EXISTS \
           (SELECT 1 FROM group_members m WHERE m.org = g.org AND m.name = g.name \
              AND m.member = ?2)) \
         ORDER BY g.org, g.name",
        params![org, member],
        group_head,
    )?;
    heads
        .into_iter()
        .map(|h| group_from_head(conn, h))
        .collect()
}

pub(crate) fn group_keys(
    conn: &Connection,
    org: &OrgName,
    name: &GroupName,
    member: &ClientFingerprint,
) -> StoreResult<Vec<WrappedKeyRecord>> {
    all(
        conn,
        "SELECT epoch, member, wrapped FROM group_keys \
         WHERE org = ?1 AND name = ?2 AND member = ?3 ORDER BY epoch",
        params![org.as_str(), name.as_str(), member.as_str()],
        |r| {
            Ok(WrappedKeyRecord {
                epoch: rows::unsigned(r, "epoch")?,
                member: rows::fingerprint(r, "member")?,
                wrapped: rows::col(r, "wrapped")?,
            })
        },
    )
}

/// Whether any row of `kind` is wrapped by a version other than `current`, answered from the
/// `kek_version` indexes: two index probes, however many rows there are. Re-wrap passes (one
/// at every start) ask this first, so a store with nothing to re-wrap is never scanned.
fn any_stale(conn: &Connection, kind: WrappedKind, current: u32) -> StoreResult<bool> {
    let sql = match kind {
        WrappedKind::DepositVersion => {
            "SELECT EXISTS (SELECT 1 FROM deposit_versions WHERE kek_version < ?1) \
                 OR EXISTS (SELECT 1 FROM deposit_versions WHERE kek_version > ?1)"
        }
        // One row per signing key: a handful at most.
        WrappedKind::AuditSigningKey => {
            "SELECT EXISTS (SELECT 1 FROM audit_signing_keys WHERE kek_version != ?1)"
        }
        // One row at most.
        WrappedKind::ClusterTlsKey => {
            "SELECT EXISTS (SELECT 1 FROM cluster_identity WHERE kek_version != ?1)"
        }
    };
    Ok(one(conn, sql, [i64::from(current)], |r| rows::at::<bool>(r, 0))?.unwrap_or(false))
}

pub(crate) fn list_stale_wrapped(
    conn: &Connection,
    kind: WrappedKind,
    current: u32,
    after: Option<&WrappedId>,
    limit: u32,
) -> StoreResult<Vec<WrappedRow>> {
    if !any_stale(conn, kind, current)? {
        return Ok(Vec::new());
    }
    match kind {
        WrappedKind::DepositVersion => {
            let (owner, name, version) = match after {
                Some(WrappedId::DepositVersion { key, version, .. }) => (
                    key.owner.stored(),
                    key.name.as_str().to_owned(),
                    int(version.get()),
                ),
                _ => (String::new(), String::new(), 0),
            };
            all(
                conn,
                "SELECT d.org, v.owner, v.name, v.version, v.kek_version, v.wrapped_dek \
                 FROM deposit_versions v JOIN deposits d ON d.owner = v.owner AND d.name = v.name \
                 WHERE v.kek_version != ?1 AND (v.owner, v.name, v.version) > (?2, ?3, ?4) \
                 ORDER BY v.owner, v.name, v.version LIMIT ?5",
                params![i64::from(current), owner, name, version, i64::from(limit)],
                |row| {
                    let version = u64::try_from(rows::col::<i64>(row, "version")?)
                        .ok()
                        .and_then(|v| DepositVersion::new(v).ok())
                        .ok_or_else(|| StoreError::Corrupt("version".into()))?;
                    Ok(WrappedRow {
                        id: WrappedId::DepositVersion {
                            org: rows::org_name(row, "org")?,
                            key: DepositKey {
                                owner: rows::principal(row, "owner")?,
                                name: rows::deposit_name(row, "name")?,
                            },
                            version,
                        },
                        kek_version: rows::kek_version(row, "kek_version")?,
                        wrapped: rows::col(row, "wrapped_dek")?,
                    })
                },
            )
        }
        WrappedKind::AuditSigningKey => {
            let after = match after {
                Some(WrappedId::AuditSigningKey { key_id, .. }) => key_id.clone(),
                _ => String::new(),
            };
            all(
                conn,
                "SELECT key_id, public_key, kek_version, wrapped FROM audit_signing_keys \
                 WHERE kek_version != ?1 AND key_id > ?2 ORDER BY key_id LIMIT ?3",
                params![i64::from(current), after, i64::from(limit)],
                |row| {
                    Ok(WrappedRow {
                        id: WrappedId::AuditSigningKey {
                            key_id: rows::col(row, "key_id")?,
                            public_key: rows::col(row, "public_key")?,
                        },
                        kek_version: rows::kek_version(row, "kek_version")?,
                        wrapped: rows::col(row, "wrapped")?,
                    })
                },
            )
        }
        WrappedKind::ClusterTlsKey => {
            let after = match after {
                Some(WrappedId::ClusterTlsKey { fingerprint }) => fingerprint.as_str().to_owned(),
                _ => String::new(),
            };
            all(
                conn,
                "SELECT fingerprint, kek_version, wrapped_dek FROM cluster_identity \
                 WHERE kek_version != ?1 AND fingerprint > ?2 ORDER BY fingerprint LIMIT ?3",
                params![i64::from(current), after, i64::from(limit)],
                |row| {
                    Ok(WrappedRow {
                        id: WrappedId::ClusterTlsKey {
                            fingerprint: rows::fingerprint(row, "fingerprint")?,
                        },
                        kek_version: rows::kek_version(row, "kek_version")?,
                        wrapped: rows::col(row, "wrapped_dek")?,
                    })
                },
            )
        }
    }
}

pub(crate) fn kek_usage(conn: &Connection) -> StoreResult<Vec<KekUsage>> {
    // Kinds are tagged by their place in `WrappedKind::ALL`, which is also the order answered.
    all(
        conn,
        "SELECT 0, kek_version, COUNT(*) FROM deposit_versions GROUP BY kek_version \
         UNION ALL SELECT 1, kek_version, COUNT(*) FROM audit_signing_keys \
         GROUP BY kek_version \
         UNION ALL SELECT 2, kek_version, COUNT(*) FROM cluster_identity \
         GROUP BY kek_version ORDER BY 1, 2",
        [],
        |r| {
            let kind: i64 = rows::at(r, 0)?;
            let v: i64 = rows::at(r, 1)?;
            let n: i64 = rows::at(r, 2)?;
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
        },
    )
}

pub(crate) fn member_groups(
    conn: &Connection,
    org: &OrgName,
    member: &ClientFingerprint,
) -> StoreResult<Vec<MemberGroup>> {
    all(
        conn,
        "SELECT name, mac FROM group_members WHERE member = ?2 AND org = ?1 ORDER BY name",
        params![org.as_str(), member.as_str()],
        |r| {
            Ok(MemberGroup {
                name: GroupName::parse(&rows::at::<String>(r, 0)?)
                    .map_err(|_| rows::corrupt("group name"))?,
                mac: rows::at(r, 1)?,
            })
        },
    )
}

/// Principals as stored, for [`list_shared`] on the blocking pool.
pub(crate) fn stored(grantees: &[Principal]) -> Vec<String> {
    grantees.iter().map(Principal::stored).collect()
}

/// Client states as stored.
pub(crate) fn state_str(s: Option<ClientState>) -> Option<&'static str> {
    s.map(|s| s.as_str())
}
