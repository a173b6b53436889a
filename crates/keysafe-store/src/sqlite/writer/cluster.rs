//! Mutations of the cluster's rows (node heartbeats, the cluster TLS identity), the change
//! serial that every change-bearing mutation bumps in its own savepoint, and the record of
//! replayed audit spool batches. Each function keeps the contract written on its
//! [`Mutation`](keysafe_core::store::Mutation) variant or `ClusterStore` method.

use super::keyring::require_for_write;
use super::{done_or_not_found, int, write_error};
use crate::sqlite::backend_error;
use keysafe_core::store::{
    Applied, ClusterIdentityRecord, NodeId, NodeRecord, StoreError, StoreResult,
};
use sqlx::SqliteConnection;

pub(super) async fn upsert_node(
    conn: &mut SqliteConnection,
    n: &NodeRecord,
) -> StoreResult<Applied> {
    sqlx::query(
        "INSERT INTO cluster_nodes (id, address, version, started_at, heartbeat_at, seal, \
         sealed_reason, writes_to, fingerprint) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version, \
         started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
         seal = excluded.seal, sealed_reason = excluded.sealed_reason, \
         writes_to = excluded.writes_to, fingerprint = excluded.fingerprint",
    )
    .bind(n.id.as_str())
    .bind(&n.address)
    .bind(&n.version)
    .bind(n.started_at.unix_millis())
    .bind(n.heartbeat_at.unix_millis())
    .bind(&n.seal)
    .bind(n.sealed_reason.as_deref())
    .bind(n.writes_to.as_deref())
    .bind(n.fingerprint.as_str())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    Ok(Applied::Done)
}

pub(super) async fn remove_node(conn: &mut SqliteConnection, id: &NodeId) -> StoreResult<Applied> {
    let r = sqlx::query("DELETE FROM cluster_nodes WHERE id = ?1")
        .bind(id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    done_or_not_found(r.rows_affected())
}

pub(super) async fn insert_identity(
    conn: &mut SqliteConnection,
    r: &ClusterIdentityRecord,
) -> StoreResult<Applied> {
    require_for_write(conn, r.kek_version).await?;
    let n = sqlx::query(
        "INSERT INTO cluster_identity (id, cert_pem, fingerprint, kek_version, wrapped_dek, \
         sealed_key, created_at) SELECT 1, ?1, ?2, ?3, ?4, ?5, ?6 \
         WHERE NOT EXISTS (SELECT 1 FROM cluster_identity)",
    )
    .bind(&r.cert_pem)
    .bind(r.fingerprint.as_str())
    .bind(i64::from(r.kek_version))
    .bind(&r.wrapped_dek)
    .bind(&r.sealed_key)
    .bind(r.created_at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    if n.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists);
    }
    Ok(Applied::Done)
}

/// Counts one more cache-relevant change; returns the new serial.
pub(super) async fn bump_serial(conn: &mut SqliteConnection) -> StoreResult<u64> {
    let (serial,): (i64,) =
        sqlx::query_as("UPDATE cluster_changes SET serial = serial + 1 RETURNING serial")
            .fetch_one(&mut *conn)
            .await
            .map_err(backend_error)?;
    u64::try_from(serial).map_err(|_| StoreError::Corrupt("change serial".into()))
}

/// Records a replayed spool batch; `AlreadyExists` when its id was recorded before.
pub(super) async fn record_spool_batch(
    conn: &mut SqliteConnection,
    id: &str,
    entries: usize,
    first_seq: u64,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO audit_spool_batches (id, entries, first_seq) VALUES (?1, ?2, ?3)")
        .bind(id)
        .bind(i64::try_from(entries).unwrap_or(i64::MAX))
        .bind(int(first_seq))
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    Ok(())
}
