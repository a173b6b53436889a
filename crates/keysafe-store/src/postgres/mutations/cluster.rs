//! The cluster's rows: node heartbeats, the cluster TLS identity, and the record of replayed
//! audit spool batches. Each function keeps the contract written on its `Mutation` variant or
//! `ClusterStore` method, the same as the SQLite store.

use super::{exec, kek_exists, not_found_if_none};
use crate::postgres::writer::{Tx, TxResult};
use keysafe_core::store::{Applied, ClusterIdentityRecord, NodeId, NodeRecord, StoreError};

pub(super) async fn upsert_node(tx: &Tx<'_>, n: &NodeRecord) -> TxResult<Applied> {
    exec(
        tx,
        "INSERT INTO cluster_nodes (id, address, version, started_at, heartbeat_at, seal, \
         sealed_reason, writes_to, fingerprint) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, \
         version = EXCLUDED.version, started_at = EXCLUDED.started_at, \
         heartbeat_at = EXCLUDED.heartbeat_at, seal = EXCLUDED.seal, \
         sealed_reason = EXCLUDED.sealed_reason, writes_to = EXCLUDED.writes_to, \
         fingerprint = EXCLUDED.fingerprint",
        &[
            &n.id.as_str(),
            &n.address,
            &n.version,
            &n.started_at.unix_millis(),
            &n.heartbeat_at.unix_millis(),
            &n.seal,
            &n.sealed_reason,
            &n.writes_to,
            &n.fingerprint.as_str(),
        ],
    )
    .await?;
    Ok(Applied::Done)
}

pub(super) async fn remove_node(tx: &Tx<'_>, id: &NodeId) -> TxResult<Applied> {
    let n = exec(
        tx,
        "DELETE FROM cluster_nodes WHERE id = $1",
        &[&id.as_str()],
    )
    .await?;
    not_found_if_none(n)
}

pub(super) async fn insert_identity(tx: &Tx<'_>, r: &ClusterIdentityRecord) -> TxResult<Applied> {
    kek_exists(tx, r.kek_version).await?;
    let n = exec(
        tx,
        "INSERT INTO cluster_identity (id, cert_pem, fingerprint, kek_version, wrapped_dek, \
         sealed_key, created_at) VALUES (TRUE, $1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO NOTHING",
        &[
            &r.cert_pem,
            &r.fingerprint.as_str(),
            &i64::from(r.kek_version),
            &r.wrapped_dek,
            &r.sealed_key,
            &r.created_at.unix_millis(),
        ],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::AlreadyExists.into());
    }
    Ok(Applied::Done)
}

/// Records a replayed spool batch; `AlreadyExists` when its id was recorded before.
pub(crate) async fn record_spool_batch(
    tx: &Tx<'_>,
    id: &str,
    entries: usize,
    first_seq: u64,
) -> TxResult<()> {
    let n = exec(
        tx,
        "INSERT INTO audit_spool_batches (id, entries, first_seq) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO NOTHING",
        &[
            &id,
            &i64::try_from(entries).unwrap_or(i64::MAX),
            &crate::postgres::rows::int(first_seq),
        ],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::AlreadyExists.into());
    }
    Ok(())
}
