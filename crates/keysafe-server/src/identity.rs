//! The caller's identity as the TLS layer saw it, attached to every request on a connection.
//! Extractors turn it into an authenticated [`Caller`] by asking the domain service.

use crate::error::ApiError;
use crate::middleware::TokenSlot;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use http::request::Parts;
use keysafe_core::Caller;
use keysafe_proto::ClientFingerprint;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the handshake established about the peer. Computed once per connection and shared by
/// its requests: a clone is a reference count, not a copy of the fingerprint.
#[derive(Debug, Clone)]
pub struct PeerIdentity(Arc<PeerFields>);

/// The fields of a [`PeerIdentity`].
#[derive(Debug)]
pub struct PeerFields {
    pub remote: SocketAddr,
    /// `remote` as text (`IP:port`), formatted once for the request span and audit entries.
    pub remote_text: Box<str>,
    pub fingerprint: Option<ClientFingerprint>,
    pub cert_der: Option<Arc<[u8]>>,
}

impl std::ops::Deref for PeerIdentity {
    type Target = PeerFields;

    fn deref(&self) -> &PeerFields {
        &self.0
    }
}

impl PeerIdentity {
    pub fn from_certs(
        remote: SocketAddr,
        certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    ) -> Self {
        let leaf = certs.and_then(|c| c.first());
        let fingerprint = leaf.and_then(|c| ClientFingerprint::of_certificate(c).ok());
        let cert_der = fingerprint
            .as_ref()
            .and(leaf)
            .map(|c| Arc::from(c.as_ref()));
        Self::from_parts(remote, fingerprint, cert_der)
    }

    /// A peer from what a handshake would have established (the fingerprint is taken as given,
    /// not derived from `cert_der`): for callers that drive the router without TLS.
    pub fn from_parts(
        remote: SocketAddr,
        fingerprint: Option<ClientFingerprint>,
        cert_der: Option<Arc<[u8]>>,
    ) -> Self {
        Self(Arc::new(PeerFields {
            remote,
            remote_text: remote.to_string().into_boxed_str(),
            fingerprint,
            cert_der,
        }))
    }
}

fn peer(parts: &Parts) -> Result<&PeerIdentity, ApiError> {
    parts
        .extensions
        .get::<PeerIdentity>()
        .ok_or_else(|| ApiError::internal("request without a peer identity"))
}

/// Authenticates the connection's certificate with the request's sequenced token, and leaves any
/// newly issued token where the response picks it up.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let p = peer(parts)?;
    let token = parts
        .headers
        .get(&crate::headers::TOKEN)
        .and_then(|v| v.to_str().ok());
    let auth = state
        .service
        .authenticate(p.fingerprint.as_ref(), token)
        .await?;
    if let Some(issued) = auth.issued_token
        && let Some(slot) = parts.extensions.get::<TokenSlot>()
    {
        slot.put(issued.0);
    }
    keysafe_core::audit::note(|e| e.org = Some(auth.caller.org.as_str().to_owned()));
    Ok(auth.caller)
}

/// An active, registered client.
#[derive(Debug, Clone)]
pub struct Authed(pub Caller);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Self(authenticate(parts, state).await?))
    }
}

/// An active server administrator.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, state).await?;
        caller.require_admin()?;
        Ok(Self(caller))
    }
}

/// The raw peer identity, for registration (the client is not registered yet).
#[derive(Debug, Clone)]
pub struct Peer(pub PeerIdentity);

impl FromRequestParts<AppState> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        Ok(Self(peer(parts)?.clone()))
    }
}
