//! `POST /v1/register`: registers the certificate of this connection into an organisation.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::identity::Peer;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use http::StatusCode;
use keysafe_proto::api::{ClientInfo, RegisterRequest};

pub async fn post(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<ClientInfo>), ApiError> {
    let info = state
        .service
        .register(peer.fingerprint.as_ref(), peer.cert_der.as_deref(), req)
        .await?;
    tracing::info!(client = %info.fingerprint, org = %info.org, state = %info.state, "client registered");
    Ok((StatusCode::CREATED, Json(info)))
}
