//! Sharing deposits: reading and changing a deposit's ACL, the deposits others shared with this
//! client, and the age recipient of a client or group to encrypt to. The re-encryption a share
//! needs is the `vault` module's.

use super::{KeysafeClient, Req};
use crate::error::ClientError;
use keysafe_proto::DepositName;
use keysafe_proto::api::{Acl, AclUpdate, RecipientInfo, SharedList};

impl KeysafeClient {
    /// The ACL of a deposit and the recipients a new version must be encrypted to.
    pub async fn acl(&self, owner: Option<&str>, name: &DepositName) -> Result<Acl, ClientError> {
        self.json(Req::get(Self::deposit_path(owner, name, ":acl")))
            .await
    }

    /// Changes an ACL with the re-encrypted versions (see the `vault` module).
    pub async fn update_acl(
        &self,
        owner: Option<&str>,
        name: &DepositName,
        update: &AclUpdate,
    ) -> Result<Acl, ClientError> {
        self.write_json(
            owner,
            name,
            Req::post(Self::deposit_path(owner, name, ":share")).json(update)?,
        )
        .await
    }

    /// Deposits others shared with this client or its groups.
    pub async fn shared(&self) -> Result<SharedList, ClientError> {
        self.json(Req::get("/v1/shared")).await
    }

    /// The age recipient of a client (fingerprint) or `group:NAME` of this organisation.
    pub async fn recipient(&self, principal: &str) -> Result<RecipientInfo, ClientError> {
        self.json(Req::get("/v1/recipients").query(&[("principal", principal)])?)
            .await
    }
}
