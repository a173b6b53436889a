//! Administrator calls about the cluster: every node's heartbeat and the database's standbys,
//! and forgetting a node that is gone.

use crate::client::{KeysafeClient, Req};
use crate::error::ClientError;
use keysafe_proto::cluster::{ClusterStatus, NodeId};
use reqwest::Method;

impl KeysafeClient {
    /// `GET /v1/admin/cluster`.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.json(Req::get("/v1/admin/cluster")).await
    }

    /// `DELETE /v1/admin/cluster/nodes/{id}`.
    pub async fn cluster_remove_node(&self, id: &NodeId) -> Result<(), ClientError> {
        self.send(Req::new(
            Method::DELETE,
            format!("/v1/admin/cluster/nodes/{id}"),
        ))
        .await
        .map(|_| ())
    }
}
