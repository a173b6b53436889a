//! `POST /v1/register`: registers the certificate of this connection into an organisation.
//! The answer carries the client's first sequenced token in `x-keysafe-token`. Failed attempts
//! are counted per source address; past the configured limit the address gets `rate_limited`.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::identity::Peer;
use crate::middleware::TokenSlot;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Extension, State};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use keysafe_core::CoreError;
use keysafe_proto::ErrorCode;
use keysafe_proto::api::{ClientInfo, RegisterRequest};

pub async fn post(
    State(state): State<AppState>,
    Peer(peer): Peer,
    Extension(slot): Extension<TokenSlot>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<ClientInfo>), (HeaderMap, ApiError)> {
    let ip = peer.remote.ip();
    if let Err(wait) = state.registration_limiter.check(ip) {
        let mut h = HeaderMap::new();
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        tracing::warn!(remote = %ip, "registration refused: too many failed attempts");
        return Err((
            h,
            ApiError::new(
                ErrorCode::RateLimited,
                "too many failed registration attempts from this address; retry later",
            ),
        ));
    }
    match state
        .service
        .register(peer.fingerprint.as_ref(), peer.cert_der.as_deref(), req)
        .await
    {
        Ok((info, token)) => {
            slot.put(token.0);
            tracing::info!(client = %info.fingerprint, org = %info.org, state = %info.state, "client registered");
            Ok((StatusCode::CREATED, Json(info)))
        }
        Err(e) => {
            if matches!(e, CoreError::InvalidAuth) {
                state.registration_limiter.record_failure(ip);
            }
            Err((HeaderMap::new(), e.into()))
        }
    }
}
