//! `GET /v1/admin/cluster` (every node's last heartbeat and the database's standbys) and
//! `DELETE /v1/admin/cluster/nodes/{id}` (forget a node that is gone for good).

use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::identity::Admin;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use http::StatusCode;
use keysafe_proto::ErrorCode;
use keysafe_proto::cluster::{ClusterStatus, NodeId};

#[utoipa::path(
    get, path = "/v1/admin/cluster", tag = "cluster",
    responses((status = 200, description = "The nodes sharing the database and its standbys.", body = ClusterStatus)),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn status(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Json<ClusterStatus>, ApiError> {
    let (nodes, replicas) = state.service.cluster_nodes(&admin).await?;
    Ok(Json(state.cluster.status(nodes, replicas)))
}

#[utoipa::path(
    delete, path = "/v1/admin/cluster/nodes/{id}", tag = "cluster",
    params(("id" = String, Path, description = "The node id.")),
    responses(
        (status = 204, description = "The node was forgotten."),
        (status = 404, description = "No such node."),
    ),
    security(("mutualTLS" = [], "sequencedToken" = [])),
)]
pub async fn remove_node(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = NodeId::parse(&id).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    state.service.remove_node(&admin, &id).await?;
    tracing::info!(node = %id, "node removed from the cluster status");
    Ok(StatusCode::NO_CONTENT)
}
