//! `POST /v1/register`: registers the certificate of this connection into an organisation.
//! The answer carries the client's first sequenced token in `x-keysafe-token`.
//!
//! The one route open to callers without an identity that costs real work, so it is fenced in
//! this order: the source address's failed attempts (those still running included) are checked
//! before the body is read; the body is bounded (`REGISTER_BODY_LIMIT`); a registration that
//! would leave a pending client (approval-mode organisation) is limited per source and in all;
//! and the verification itself (Argon2id, 19 MiB) runs with one of a few permits sized to the
//! cores, held by a task of its own so that a caller who hangs up cannot free it early. Each
//! limit answers `429 rate_limited` with `Retry-After`.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::identity::Peer;
use crate::middleware::TokenSlot;
use crate::state::AppState;
use axum::Json;
use axum::extract::{FromRequest, Request, State};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use keysafe_core::CoreError;
use keysafe_proto::api::{AuthMode, ClientInfo, ClientState, RegisterRequest};
use keysafe_proto::{ErrorCode, REGISTRATION_TOKEN_PREFIX};
use std::time::Duration;

type Refusal = (HeaderMap, ApiError);

fn rate_limited(wait: Duration, message: &'static str) -> Refusal {
    let mut h = HeaderMap::new();
    h.insert(
        header::RETRY_AFTER,
        HeaderValue::from(wait.as_secs().max(1)),
    );
    (h, ApiError::new(ErrorCode::RateLimited, message))
}

fn plain(e: impl Into<ApiError>) -> Refusal {
    (HeaderMap::new(), e.into())
}

#[utoipa::path(
    post, path = "/v1/register", tag = "clients",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered (state `active`, or `pending` in an approval-mode organisation); the first sequenced token is in `x-keysafe-token`.", body = ClientInfo),
        (status = 403, description = "Registration into the administrators' organisation."),
        (status = 409, description = "The certificate is registered already."),
        (status = 429, description = "Too many failed or pending registrations, or every verification slot busy.",
            headers(("retry-after" = u64, description = "Seconds until the address may try again."))),
    ),
    security(("mutualTLS" = [])),
)]
pub async fn post(
    State(state): State<AppState>,
    Peer(peer): Peer,
    req: Request,
) -> Result<(StatusCode, Json<ClientInfo>), Refusal> {
    let ip = peer.remote.ip();
    let limits = state.registration.clone();
    let attempt = limits.failures.begin(ip).map_err(|wait| {
        tracing::warn!(remote = %ip, "registration refused: too many failed attempts");
        rate_limited(
            wait,
            "too many failed registration attempts from this address; retry later",
        )
    })?;
    let slot = req.extensions().get::<TokenSlot>().cloned();
    let ApiJson(body) = ApiJson::<RegisterRequest>::from_request(req, &state)
        .await
        .map_err(plain)?;
    // A registration token stands for an administrator's approval: it never leaves a pending
    // client, so only the rest count against the pending limits.
    let with_token = body
        .auth_secret
        .as_ref()
        .is_some_and(|s| s.expose().starts_with(REGISTRATION_TOKEN_PREFIX));
    let pending = if !with_token
        && state
            .service
            .registration_mode(&body.org)
            .await
            .map_err(plain)?
            == Some(AuthMode::Approval)
    {
        let p = limits.pending.begin(ip).map_err(|wait| {
            tracing::warn!(remote = %ip, "registration refused: too many pending registrations");
            rate_limited(
                wait,
                "too many registrations awaiting approval from this address; retry later",
            )
        })?;
        limits.pending_total.take().map_err(|wait| {
            tracing::warn!("registration refused: too many pending registrations in all");
            rate_limited(
                wait,
                "too many registrations await approval; retry later or ask an administrator",
            )
        })?;
        Some(p)
    } else {
        None
    };
    let permit = match tokio::time::timeout(
        limits.verification_wait,
        limits.verifications.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            tracing::warn!(remote = %ip, "registration refused: verifications busy");
            return Err(rate_limited(
                Duration::from_secs(1),
                "the server is busy verifying other registrations; retry shortly",
            ));
        }
    };
    let service = state.service.clone();
    let (fp, cert) = (peer.fingerprint.clone(), peer.cert_der.clone());
    let outcome = tokio::spawn(async move {
        let _permit = permit;
        service.register(fp.as_ref(), cert.as_deref(), body).await
    })
    .await
    .map_err(|e| {
        plain(ApiError::internal(&format!(
            "registration task failed: {e}"
        )))
    })?;
    match outcome {
        Ok((info, token)) => {
            if let Some(slot) = slot {
                slot.put(token.0);
            }
            if info.state == ClientState::Pending
                && let Some(p) = pending
            {
                p.count();
            }
            drop(attempt);
            tracing::info!(client = %info.fingerprint, org = %info.org, state = %info.state, "client registered");
            Ok((StatusCode::CREATED, Json(info)))
        }
        Err(e) => {
            if matches!(e, CoreError::InvalidAuth) {
                attempt.count();
            }
            Err(plain(e))
        }
    }
}
