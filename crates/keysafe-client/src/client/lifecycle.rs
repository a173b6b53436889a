//! The administrator's lifecycle calls: deletions (with their dry runs), unused registration
//! tokens, client pages, and the `disable-unactivated` preview.

use super::request::percent_encode;
use super::{KeysafeClient, Req};
use crate::error::ClientError;
use keysafe_proto::api::{
    ClientDeletion, ClientList, ClientListQuery, ClientState, DeleteQuery,
    DisableUnactivatedRequest, GroupDeletion, OrgDeletion, RegistrationTokenList, RevokedTokens,
};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName};
use reqwest::Method;

fn delete(path: String, dry_run: bool) -> Result<Req, ClientError> {
    Req::new(Method::DELETE, path).query(&DeleteQuery { dry_run })
}

impl KeysafeClient {
    /// `DELETE /v1/admin/orgs/{name}`; `dry_run`: only what it would remove.
    pub async fn delete_org(
        &self,
        org: &OrgName,
        dry_run: bool,
    ) -> Result<OrgDeletion, ClientError> {
        self.json(delete(format!("/v1/admin/orgs/{org}"), dry_run)?)
            .await
    }

    /// `DELETE /v1/admin/clients/{fingerprint}`; `dry_run`: only what it would remove.
    pub async fn delete_client(
        &self,
        fp: &ClientFingerprint,
        dry_run: bool,
    ) -> Result<ClientDeletion, ClientError> {
        self.json(delete(format!("/v1/admin/clients/{fp}"), dry_run)?)
            .await
    }

    /// `DELETE /v1/admin/groups/{org}/{name}`; `dry_run`: only what it would remove.
    pub async fn delete_group(
        &self,
        org: &OrgName,
        name: &GroupName,
        dry_run: bool,
    ) -> Result<GroupDeletion, ClientError> {
        self.json(delete(format!("/v1/admin/groups/{org}/{name}"), dry_run)?)
            .await
    }

    /// `GET /v1/admin/orgs/{name}/tokens`: registration tokens never used.
    pub async fn registration_tokens(
        &self,
        org: &OrgName,
    ) -> Result<RegistrationTokenList, ClientError> {
        self.json(Req::get(format!("/v1/admin/orgs/{org}/tokens")))
            .await
    }

    /// `DELETE /v1/admin/orgs/{name}/tokens/{id}` (`Some(id)`: the token whose hash starts
    /// with it) or `DELETE /v1/admin/orgs/{name}/tokens` (`None`: every unused one).
    pub async fn revoke_registration_tokens(
        &self,
        org: &OrgName,
        id: Option<&str>,
    ) -> Result<RevokedTokens, ClientError> {
        let path = match id {
            Some(id) => format!("/v1/admin/orgs/{org}/tokens/{}", percent_encode(id)),
            None => format!("/v1/admin/orgs/{org}/tokens"),
        };
        self.json(Req::new(Method::DELETE, path)).await
    }

    /// One page of `GET /v1/admin/clients`.
    pub async fn list_clients_page(
        &self,
        org: Option<&OrgName>,
        state: Option<ClientState>,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<ClientList, ClientError> {
        let q = ClientListQuery {
            org: org.map(|o| o.to_string()),
            state: state.map(|s| s.as_str().to_owned()),
            limit,
            after: after.map(str::to_owned),
        };
        self.json(Req::get("/v1/admin/clients").query(&q)?).await
    }

    /// Every client matching the filters, page after page.
    pub async fn list_clients(
        &self,
        org: Option<&OrgName>,
        state: Option<ClientState>,
    ) -> Result<ClientList, ClientError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .list_clients_page(org, state, None, after.as_deref())
                .await?;
            all.extend(page.clients);
            match page.next_after {
                // A cursor that does not move would loop for ever.
                Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
                _ => break,
            }
        }
        Ok(ClientList {
            clients: all,
            next_after: None,
        })
    }

    /// `POST /v1/admin/clients/disable-unactivated` with `dry_run`: the clients it would
    /// disable, none disabled.
    pub async fn preview_unactivated(
        &self,
        older_than_seconds: u64,
    ) -> Result<ClientList, ClientError> {
        self.json(Req::post("/v1/admin/clients/disable-unactivated").json(
            &DisableUnactivatedRequest {
                older_than_seconds,
                dry_run: true,
            },
        )?)
        .await
    }
}
