//! Administrator calls for seals, keyring rotation and backups (issue 5).

use crate::client::{KeysafeClient, Req};
use crate::error::ClientError;
use keysafe_proto::api::{
    BackupRequest, KeyringRetireRequest, KeyringRotated, KeyringStatusInfo, UnsealRequest,
};

impl KeysafeClient {
    /// `POST /v1/admin/unseal`.
    pub async fn unseal(&self, passphrase: &str) -> Result<KeyringStatusInfo, ClientError> {
        let req = UnsealRequest {
            passphrase: passphrase.to_owned(),
        };
        self.json(Req::post("/v1/admin/unseal").json(&req)?).await
    }

    /// `GET /v1/admin/keyring`.
    pub async fn keyring_status(&self) -> Result<KeyringStatusInfo, ClientError> {
        self.json(Req::get("/v1/admin/keyring")).await
    }

    /// `POST /v1/admin/keyring/rotate`.
    pub async fn keyring_rotate(&self) -> Result<KeyringRotated, ClientError> {
        self.json(Req::post("/v1/admin/keyring/rotate")).await
    }

    /// `POST /v1/admin/keyring/retire`.
    pub async fn keyring_retire(&self, version: u32) -> Result<KeyringStatusInfo, ClientError> {
        self.json(Req::post("/v1/admin/keyring/retire").json(&KeyringRetireRequest { version })?)
            .await
    }

    /// `POST /v1/admin/backup`: the encrypted backup file.
    pub async fn backup(&self, req: &BackupRequest) -> Result<bytes::Bytes, ClientError> {
        Ok(self
            .send(Req::post("/v1/admin/backup").json(req)?)
            .await?
            .body)
    }
}
