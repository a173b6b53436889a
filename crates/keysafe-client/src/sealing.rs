//! Administrator calls for seals, keyring rotation and backups.

use crate::client::{KeysafeClient, Req};
use crate::error::ClientError;
use keysafe_proto::api::{
    BackupRequest, IntegrityReport, KeyringRetireRequest, KeyringRotated, KeyringStatusInfo,
    UnsealRequest,
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

    /// `POST /v1/admin/integrity/verify`: checks every authenticated access row.
    pub async fn integrity_verify(&self) -> Result<IntegrityReport, ClientError> {
        self.json(Req::post("/v1/admin/integrity/verify")).await
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

    /// `POST /v1/admin/backup`: the encrypted backup file, whole (small stores and tests;
    /// [`KeysafeClient::backup_to`] streams it).
    pub async fn backup(&self, req: &BackupRequest) -> Result<bytes::Bytes, ClientError> {
        let mut out = Vec::new();
        self.backup_to(req, &mut out).await?;
        Ok(out.into())
    }

    /// `POST /v1/admin/backup`, written into `out` as it arrives: memory stays flat whatever
    /// the store's size. A backup cut short (the server failed mid-way, the connection broke)
    /// is an error here, and its partial bytes never pass `keysafe backup verify`.
    pub async fn backup_to(
        &self,
        req: &BackupRequest,
        out: &mut dyn std::io::Write,
    ) -> Result<u64, ClientError> {
        // A backup of a large store takes minutes: the exchange gets a day, not the usual
        // request timeout.
        let timeout = std::time::Duration::from_secs(24 * 3600);
        self.stream_answer(Req::post("/v1/admin/backup").json(req)?, timeout, |b| {
            out.write_all(b)
        })
        .await
    }
}
