//! The cluster's reads on SQLite, where the nodes are processes sharing one database file:
//! node rows, the cluster TLS identity and the change serial. SQLite has no announcements
//! (nodes poll the serial) and no standbys.

use super::conn::{all, one};
use super::{SqliteStore, rows, writer, writer_stopped};
use async_trait::async_trait;
use keysafe_core::store::{
    AuditAppendError, ChangeEvent, ClusterIdentityRecord, ClusterStore, NodeId, NodeRecord,
    ReplicaInfo, SpoolBatch, SpoolReplay, StoreError, StoreResult,
};
use rusqlite::Row;
use tokio::sync::{mpsc, oneshot};

fn node(row: &Row<'_>) -> StoreResult<NodeRecord> {
    Ok(NodeRecord {
        id: NodeId::parse(&rows::col::<String>(row, "id")?)
            .map_err(|_| rows::corrupt("node id"))?,
        address: rows::col(row, "address")?,
        version: rows::col(row, "version")?,
        started_at: rows::ts(row, "started_at")?,
        heartbeat_at: rows::ts(row, "heartbeat_at")?,
        seal: rows::col(row, "seal")?,
        sealed_reason: rows::col(row, "sealed_reason")?,
        writes_to: rows::col(row, "writes_to")?,
        fingerprint: rows::fingerprint(row, "fingerprint")?,
    })
}

#[async_trait]
impl ClusterStore for SqliteStore {
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        // One row per node: a handful, read inline like a point read.
        self.readers.run(|c| {
            all(
                c,
                "SELECT id, address, version, started_at, heartbeat_at, seal, sealed_reason, \
                 writes_to, fingerprint FROM cluster_nodes ORDER BY id",
                [],
                node,
            )
        })
    }

    async fn replication(&self) -> StoreResult<Vec<ReplicaInfo>> {
        Ok(Vec::new())
    }

    async fn write_target(&self) -> StoreResult<String> {
        Ok(format!("sqlite:{}", self.path.display()))
    }

    async fn cluster_identity(&self) -> StoreResult<Option<ClusterIdentityRecord>> {
        self.readers.run(|c| {
            one(
                c,
                "SELECT cert_pem, fingerprint, kek_version, wrapped_dek, sealed_key, created_at \
                 FROM cluster_identity",
                [],
                |r| {
                    Ok(ClusterIdentityRecord {
                        cert_pem: rows::col(r, "cert_pem")?,
                        fingerprint: rows::fingerprint(r, "fingerprint")?,
                        kek_version: rows::kek_version(r, "kek_version")?,
                        wrapped_dek: rows::col(r, "wrapped_dek")?,
                        sealed_key: rows::col(r, "sealed_key")?,
                        created_at: rows::ts(r, "created_at")?,
                    })
                },
            )
        })
    }

    async fn change_serial(&self) -> StoreResult<u64> {
        let serial = self
            .readers
            .run(|c| {
                one(c, "SELECT serial FROM cluster_changes", [], |r| {
                    rows::at::<i64>(r, 0)
                })
            })?
            .ok_or_else(|| StoreError::Corrupt("change serial".into()))?;
        u64::try_from(serial).map_err(|_| StoreError::Corrupt("change serial".into()))
    }

    fn subscribe_changes(&self) -> Option<tokio::sync::broadcast::Receiver<ChangeEvent>> {
        None
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
