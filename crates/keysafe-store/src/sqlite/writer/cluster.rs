//! Mutations of the cluster's rows (node heartbeats, the cluster TLS identity), the change
//! serial that every change-bearing mutation bumps in its own savepoint, and the record of
//! replayed audit spool batches. Each function keeps the contract written on its
//! [`Mutation`](keysafe_core::store::Mutation) variant or `ClusterStore` method.

use super::keyring::require_for_write;
use super::{done_or_not_found, int};
use crate::sqlite::conn::{exec, one};
use crate::sqlite::rows::at;
use keysafe_core::store::{
    Applied, ClusterIdentityRecord, NodeId, NodeRecord, StoreError, StoreResult,
};
use rusqlite::{Connection, params};

pub(super) fn upsert_node(conn: &Connection, n: &NodeRecord) -> StoreResult<Applied> {
    exec(
        conn,
        "INSERT INTO cluster_nodes (id, address, version, started_at, heartbeat_at, seal, \
         sealed_reason, writes_to, fingerprint) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version, \
         started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
         seal = excluded.seal, sealed_reason = excluded.sealed_reason, \
         writes_to = excluded.writes_to, fingerprint = excluded.fingerprint",
        params![
            n.id.as_str(),
            n.address,
            n.version,
            n.started_at.unix_millis(),
            n.heartbeat_at.unix_millis(),
            n.seal,
            n.sealed_reason.as_deref(),
            n.writes_to.as_deref(),
            n.fingerprint.as_str()
        ],
    )?;
    Ok(Applied::Done)
}

pub(super) fn remove_node(conn: &Connection, id: &NodeId) -> StoreResult<Applied> {
    let n = exec(
        conn,
        "DELETE FROM cluster_nodes WHERE id = ?1",
        [id.as_str()],
    )?;
    done_or_not_found(n)
}

pub(super) fn insert_identity(
    conn: &Connection,
    r: &ClusterIdentityRecord,
) -> StoreResult<Applied> {
    require_for_write(conn, r.kek_version)?;
    let n = exec(
        conn,
        "INSERT INTO cluster_identity (id, cert_pem, fingerprint, kek_version, wrapped_dek, \
         sealed_key, created_at) SELECT 1, ?1, ?2, ?3, ?4, ?5, ?6 \
         WHERE NOT EXISTS (SELECT 1 FROM cluster_identity)",
        params![
            r.cert_pem,
            r.fingerprint.as_str(),
            i64::from(r.kek_version),
            r.wrapped_dek,
            r.sealed_key,
            r.created_at.unix_millis()
        ],
    )?;
    if n == 0 {
        return Err(StoreError::AlreadyExists);
    }
    Ok(Applied::Done)
}

/// Counts one more cache-relevant change; returns the new serial.
pub(super) fn bump_serial(conn: &Connection) -> StoreResult<u64> {
    let serial = one(
        conn,
        "UPDATE cluster_changes SET serial = serial + 1 RETURNING serial",
        [],
        |r| at::<i64>(r, 0),
    )?
    .ok_or_else(|| StoreError::Corrupt("change serial".into()))?;
    u64::try_from(serial).map_err(|_| StoreError::Corrupt("change serial".into()))
}

/// Records a replayed spool batch; `AlreadyExists` when its id was recorded before.
pub(super) fn record_spool_batch(
    conn: &Connection,
    id: &str,
    entries: usize,
    first_seq: u64,
) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO audit_spool_batches (id, entries, first_seq) VALUES (?1, ?2, ?3)",
        params![
            id,
            i64::try_from(entries).unwrap_or(i64::MAX),
            int(first_seq)
        ],
    )?;
    Ok(())
}
