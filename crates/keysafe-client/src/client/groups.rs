//! Groups: a member's calls (list, create, inspect, keys, admit) and the administrator's calls
//! on the groups of any organisation (list, create, inspect, add and remove members).

use super::{KeysafeClient, Req};
use crate::error::ClientError;
use keysafe_proto::api::{
    GroupAddMember, GroupAdmitRequest, GroupCreateRequest, GroupInfo, GroupKeys, GroupList,
    GroupRemoveMember,
};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName};

impl KeysafeClient {
    pub async fn groups(&self) -> Result<GroupList, ClientError> {
        self.json(Req::get("/v1/groups")).await
    }

    pub async fn create_group(&self, req: &GroupCreateRequest) -> Result<GroupInfo, ClientError> {
        self.json(Req::post("/v1/groups").json(req)?).await
    }

    pub async fn group(&self, name: &GroupName) -> Result<GroupInfo, ClientError> {
        self.json(Req::get(format!("/v1/groups/{name}"))).await
    }

    pub async fn group_keys(&self, name: &GroupName) -> Result<GroupKeys, ClientError> {
        self.json(Req::get(format!("/v1/groups/{name}/keys"))).await
    }

    pub async fn admit(
        &self,
        name: &GroupName,
        req: &GroupAdmitRequest,
    ) -> Result<GroupInfo, ClientError> {
        self.json(Req::post(format!("/v1/groups/{name}/admit")).json(req)?)
            .await
    }

    pub async fn admin_groups(&self, org: Option<&OrgName>) -> Result<GroupList, ClientError> {
        let mut req = Req::get("/v1/admin/groups");
        if let Some(o) = org {
            req = req.query(&[("org", o.as_str())])?;
        }
        self.json(req).await
    }

    pub async fn admin_create_group(
        &self,
        req: &GroupCreateRequest,
    ) -> Result<GroupInfo, ClientError> {
        self.json(Req::post("/v1/admin/groups").json(req)?).await
    }

    pub async fn admin_group(
        &self,
        org: &OrgName,
        name: &GroupName,
    ) -> Result<GroupInfo, ClientError> {
        self.json(Req::get(format!("/v1/admin/groups/{org}/{name}")))
            .await
    }

    pub async fn admin_add_member(
        &self,
        org: &OrgName,
        name: &GroupName,
        member: &ClientFingerprint,
    ) -> Result<GroupInfo, ClientError> {
        self.json(
            Req::post(format!("/v1/admin/groups/{org}/{name}/add-member")).json(
                &GroupAddMember {
                    member: member.clone(),
                },
            )?,
        )
        .await
    }

    pub async fn admin_remove_member(
        &self,
        org: &OrgName,
        name: &GroupName,
        req: &GroupRemoveMember,
    ) -> Result<GroupInfo, ClientError> {
        self.json(Req::post(format!("/v1/admin/groups/{org}/{name}/remove-member")).json(req)?)
            .await
    }
}
