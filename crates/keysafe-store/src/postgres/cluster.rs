//! The cluster's reads on PostgreSQL: node rows, the primary's standbys
//! (`pg_stat_replication`), where writes go, the cluster TLS identity, the change serial, and
//! the feed of change announcements (`notify`).

use super::errors::{pool_error, store_error};
use super::{PostgresStore, reads, route, rows, writer, writer_stopped};
use async_trait::async_trait;
use keysafe_core::store::{
    AuditAppendError, ChangeEvent, ClusterIdentityRecord, ClusterStore, NodeId, NodeRecord,
    ReplicaInfo, SpoolBatch, SpoolReplay, StoreError, StoreResult,
};
use tokio::sync::{mpsc, oneshot};

#[async_trait]
impl ClusterStore for PostgresStore {
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        reads::query(
            &self.pool,
            "SELECT id, address, version, started_at, heartbeat_at, seal, sealed_reason, \
             writes_to, fingerprint FROM cluster_nodes ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(NodeRecord {
                id: NodeId::parse(rows::col::<&str>(r, "id")?)
                    .map_err(|_| rows::corrupt("node id"))?,
                address: rows::col(r, "address")?,
                version: rows::col(r, "version")?,
                started_at: rows::ts(r, "started_at")?,
                heartbeat_at: rows::ts(r, "heartbeat_at")?,
                seal: rows::col(r, "seal")?,
                sealed_reason: rows::col(r, "sealed_reason")?,
                writes_to: rows::col(r, "writes_to")?,
                fingerprint: rows::fingerprint(r, "fingerprint")?,
            })
        })
        .collect()
    }

    /// The standbys as the server the route reads from reports them: the primary's list, or
    /// nothing while only a standby answers. Columns the keysafe role may not see (without
    /// `pg_monitor`) are NULL and reported as unknown.
    async fn replication(&self) -> StoreResult<Vec<ReplicaInfo>> {
        reads::query(
            &self.pool,
            "SELECT application_name, host(client_addr) AS address, state, sync_state, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes, \
                    EXTRACT(EPOCH FROM replay_lag)::float8 AS replay_lag \
             FROM pg_stat_replication WHERE NOT pg_is_in_recovery() \
             ORDER BY application_name, client_addr",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(ReplicaInfo {
                name: rows::col::<Option<String>>(r, "application_name")?.unwrap_or_default(),
                address: rows::col(r, "address")?,
                state: rows::col::<Option<String>>(r, "state")?.unwrap_or_else(|| "unknown".into()),
                sync_state: rows::col::<Option<String>>(r, "sync_state")?
                    .unwrap_or_else(|| "unknown".into()),
                lag_bytes: rows::col::<Option<i64>>(r, "lag_bytes")?
                    .map(|b| u64::try_from(b).unwrap_or(0)),
                replay_lag_seconds: rows::col(r, "replay_lag")?,
            })
        })
        .collect()
    }

    async fn write_target(&self) -> StoreResult<String> {
        let client = match self.pool.primary().get().await {
            Ok(c) => c,
            Err(e) if route::unreachable(&e) => {
                return Err(self.pool.refusal(pool_error(e)).await);
            }
            Err(e) => return Err(pool_error(e)),
        };
        let row = client
            .query_one(
                "SELECT COALESCE(host(inet_server_addr()), 'local') AS host, \
                        COALESCE(inet_server_port(), 0) AS port",
                &[],
            )
            .await
            .map_err(store_error)?;
        let host: String = rows::col(&row, "host")?;
        let port: i32 = rows::col(&row, "port")?;
        Ok(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        })
    }

    async fn cluster_identity(&self) -> StoreResult<Option<ClusterIdentityRecord>> {
        reads::query_opt(
            &self.pool,
            "SELECT cert_pem, fingerprint, kek_version, wrapped_dek, sealed_key, created_at \
             FROM cluster_identity",
            &[],
        )
        .await?
        .map(|r| {
            Ok(ClusterIdentityRecord {
                cert_pem: rows::col(&r, "cert_pem")?,
                fingerprint: rows::fingerprint(&r, "fingerprint")?,
                kek_version: rows::u32_col(&r, "kek_version")?,
                wrapped_dek: rows::col(&r, "wrapped_dek")?,
                sealed_key: rows::col(&r, "sealed_key")?,
                created_at: rows::ts(&r, "created_at")?,
            })
        })
        .transpose()
    }

    async fn change_serial(&self) -> StoreResult<u64> {
        let row = reads::query_opt(&self.pool, "SELECT serial FROM cluster_changes", &[])
            .await?
            .ok_or_else(|| StoreError::Corrupt("the cluster_changes row is missing".into()))?;
        rows::unsigned(&row, "serial")
    }

    fn subscribe_changes(&self) -> Option<tokio::sync::broadcast::Receiver<ChangeEvent>> {
        Some(self.listener.subscribe())
    }

    async fn append_spooled(&self, batch: SpoolBatch) -> Result<SpoolReplay, AuditAppendError> {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = self
            .writer
            .send(writer::Job::Spooled { batch, reply })
            .await
        {
            let events = match job {
                writer::Job::Spooled { batch, .. } => batch.events,
                _ => Vec::new(),
            };
            return Err(AuditAppendError {
                error: writer_stopped(),
                events,
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(AuditAppendError {
                error: writer_stopped(),
                events: Vec::new(),
            })
        })
    }
}
