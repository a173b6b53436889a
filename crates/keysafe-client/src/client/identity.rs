//! Who this client is: its own fingerprint, the sequenced token it holds (clone detection), and
//! the calls that register it and ask the server who it is.

use super::{KeysafeClient, Req};
use crate::error::ClientError;
use keysafe_proto::ClientFingerprint;
use keysafe_proto::api::{ClientInfo, RegisterRequest};

impl KeysafeClient {
    /// This client's own fingerprint (`None` for an anonymous client).
    pub fn own_fingerprint(&self) -> Option<ClientFingerprint> {
        ClientFingerprint::parse(&self.inner.me).ok()
    }

    /// The sequenced token this client holds (to hand to another keeper).
    pub fn current_token(&self) -> Option<zeroize::Zeroizing<String>> {
        self.inner.token.current()
    }

    /// The counter of the sequenced token this client holds.
    pub fn token_counter(&self) -> Option<u64> {
        self.inner.token.counter()
    }

    /// Takes a sequenced token (registration stores the first one this way).
    pub fn offer_token(&self, token: &str) -> Result<(), ClientError> {
        self.inner.token.offer(token)
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<ClientInfo, ClientError> {
        self.json(Req::post("/v1/register").json(req)?).await
    }

    pub async fn whoami(&self) -> Result<ClientInfo, ClientError> {
        self.json(Req::get("/v1/whoami")).await
    }
}
