//! The administrator's calls on organisations and clients: creating and listing organisations
//! and setting how new clients join one (a secret or an administrator's approval), minting
//! registration tokens, approving, disabling and enabling clients, and disabling clients never
//! activated. Deletions and other cleanup are in the `lifecycle` module.

use super::{KeysafeClient, Req};
use crate::error::ClientError;
use keysafe_proto::api::{
    ClientInfo, ClientList, DisableUnactivatedRequest, OrgCreateRequest, OrgCreated, OrgList,
    OrgSetAuthRequest, OrgSetAuthResponse, RegistrationToken, RegistrationTokenRequest,
};
use keysafe_proto::{ClientFingerprint, OrgName};
use reqwest::Method;

impl KeysafeClient {
    pub async fn mint_registration_token(
        &self,
        org: &OrgName,
        ttl_seconds: Option<u64>,
    ) -> Result<RegistrationToken, ClientError> {
        self.json(
            Req::post(format!("/v1/admin/orgs/{org}/tokens"))
                .json(&RegistrationTokenRequest { ttl_seconds })?,
        )
        .await
    }

    pub async fn disable_unactivated(
        &self,
        older_than_seconds: u64,
    ) -> Result<ClientList, ClientError> {
        self.json(Req::post("/v1/admin/clients/disable-unactivated").json(
            &DisableUnactivatedRequest {
                older_than_seconds,
                dry_run: false,
            },
        )?)
        .await
    }

    pub async fn create_org(&self, req: &OrgCreateRequest) -> Result<OrgCreated, ClientError> {
        self.json(Req::post("/v1/admin/orgs").json(req)?).await
    }

    pub async fn list_orgs(&self) -> Result<OrgList, ClientError> {
        self.json(Req::get("/v1/admin/orgs")).await
    }

    pub async fn set_org_auth(
        &self,
        org: &OrgName,
        req: &OrgSetAuthRequest,
    ) -> Result<OrgSetAuthResponse, ClientError> {
        self.json(Req::new(Method::PUT, format!("/v1/admin/orgs/{org}/auth")).json(req)?)
            .await
    }

    /// `approve`, `disable` or `enable` a client.
    pub async fn client_action(
        &self,
        fp: &ClientFingerprint,
        action: &str,
    ) -> Result<ClientInfo, ClientError> {
        self.json(Req::post(format!("/v1/admin/clients/{fp}/{action}")))
            .await
    }
}
