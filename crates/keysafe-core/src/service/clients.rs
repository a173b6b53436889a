//! Clients: registration into an organisation (by auth secret, or pending an administrator's
//! approval) and the administrator's lifecycle actions.

use super::{Caller, Service};
use crate::error::CoreError;
use crate::secrets;
use crate::store::{ClientRecord, Mutation, OrgRecord};
use keysafe_proto::api::{AuthMode, ClientInfo, ClientRole, ClientState, RegisterRequest};
use keysafe_proto::{ClientFingerprint, ClientName, OrgName};

/// What an administrator can do to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// pending -> active.
    Approve,
    /// any -> disabled.
    Disable,
    /// disabled -> active.
    Enable,
    /// Makes an active client a server administrator.
    Promote,
    /// Makes a server administrator an ordinary client again.
    Demote,
}

pub(crate) fn client_info(r: &ClientRecord) -> ClientInfo {
    ClientInfo {
        fingerprint: r.fingerprint.clone(),
        org: r.org.clone(),
        name: r.name.clone(),
        state: r.state,
        role: r.role,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// The organisation that holds server administrators created by `init`.
pub const ADMIN_ORG: &str = "keysafe-admins";

impl Service {
    /// Registers the client behind a TLS connection. The fingerprint and certificate come from
    /// the handshake, so registering proves possession of the private key.
    pub async fn register(
        &self,
        fingerprint: Option<&ClientFingerprint>,
        cert_der: Option<&[u8]>,
        req: RegisterRequest,
    ) -> Result<ClientInfo, CoreError> {
        let (Some(fp), Some(cert)) = (fingerprint, cert_der) else {
            return Err(CoreError::ClientCertificateRequired);
        };
        if self.store.get_client(fp).await?.is_some() {
            return Err(CoreError::AlreadyRegistered);
        }
        if req.org.as_str() == ADMIN_ORG {
            return Err(CoreError::Forbidden(format!(
                "nobody registers into {ADMIN_ORG}; register into an organisation and have an \
                 administrator promote the client"
            )));
        }
        let org = self.store.get_org(&req.org).await?;
        let state = self.check_registration_auth(org.as_ref(), &req).await?;
        let now = self.clock.now();
        let rec = ClientRecord {
            fingerprint: fp.clone(),
            org: req.org,
            name: req.name,
            state,
            role: ClientRole::Client,
            cert_der: cert.to_vec(),
            created_at: now,
            updated_at: now,
        };
        self.store
            .apply(Mutation::InsertClient(rec.clone()))
            .await
            .map_err(|e| match e {
                crate::store::StoreError::AlreadyExists => CoreError::AlreadyRegistered,
                other => CoreError::from_store(other, "client"),
            })?;
        Ok(client_info(&rec))
    }

    /// Decides the new client's state, or refuses. Unknown organisation and wrong secret are the
    /// same error and cost the same time.
    async fn check_registration_auth(
        &self,
        org: Option<&OrgRecord>,
        req: &RegisterRequest,
    ) -> Result<ClientState, CoreError> {
        let secret = req.auth_secret.clone();
        match org {
            Some(o) if o.auth_mode == AuthMode::Approval => Ok(ClientState::Pending),
            Some(o) => {
                let (Some(secret), Some(hash)) = (secret, o.auth_hash.clone()) else {
                    return Err(CoreError::InvalidAuth);
                };
                let ok =
                    tokio::task::spawn_blocking(move || secrets::verify_secret(&secret, &hash))
                        .await
                        .map_err(|e| {
                            CoreError::Internal(format!("verification task failed: {e}"))
                        })?;
                if ok {
                    Ok(ClientState::Active)
                } else {
                    Err(CoreError::InvalidAuth)
                }
            }
            None => {
                if let Some(secret) = secret {
                    let _ =
                        tokio::task::spawn_blocking(move || secrets::burn_verification(&secret))
                            .await;
                }
                Err(CoreError::InvalidAuth)
            }
        }
    }

    /// Creates the administrator organisation (approval mode, so nobody registers into it with a
    /// secret) and registers the first server administrator directly. Used by `init` only.
    pub async fn bootstrap_admin(
        &self,
        fingerprint: &ClientFingerprint,
        cert_der: &[u8],
        name: ClientName,
    ) -> Result<ClientInfo, CoreError> {
        let org = OrgName::parse(ADMIN_ORG)?;
        let now = self.clock.now();
        match self
            .store
            .apply(Mutation::CreateOrg(OrgRecord {
                name: org.clone(),
                contacts: vec![],
                auth_mode: AuthMode::Approval,
                auth_hash: None,
                created_at: now,
                updated_at: now,
            }))
            .await
        {
            Ok(_) | Err(crate::store::StoreError::AlreadyExists) => {}
            Err(e) => return Err(CoreError::from_store(e, "organisation")),
        }
        let rec = ClientRecord {
            fingerprint: fingerprint.clone(),
            org,
            name: Some(name),
            state: ClientState::Active,
            role: ClientRole::Admin,
            cert_der: cert_der.to_vec(),
            created_at: now,
            updated_at: now,
        };
        self.store
            .apply(Mutation::InsertClient(rec.clone()))
            .await
            .map_err(|e| CoreError::from_store(e, "client"))?;
        Ok(client_info(&rec))
    }

    /// The caller's own record.
    pub async fn whoami(&self, caller: &Caller) -> Result<ClientInfo, CoreError> {
        let rec = self
            .store
            .get_client(&caller.fingerprint)
            .await?
            .ok_or(CoreError::UnknownClient)?;
        Ok(client_info(&rec))
    }

    pub async fn list_clients(
        &self,
        _admin: &Caller,
        org: Option<&OrgName>,
        state: Option<ClientState>,
    ) -> Result<Vec<ClientInfo>, CoreError> {
        Ok(self
            .store
            .list_clients(org, state)
            .await?
            .iter()
            .map(client_info)
            .collect())
    }

    pub async fn client_action(
        &self,
        admin: &Caller,
        fp: &ClientFingerprint,
        action: ClientAction,
    ) -> Result<ClientInfo, CoreError> {
        let mut rec = self
            .store
            .get_client(fp)
            .await?
            .ok_or(CoreError::NotFound("client"))?;
        let myself = fp == &admin.fingerprint;
        if myself && matches!(action, ClientAction::Disable | ClientAction::Demote) {
            return Err(CoreError::Forbidden(
                "an administrator cannot disable or demote its own identity".into(),
            ));
        }
        let at = self.clock.now();
        match action {
            ClientAction::Promote | ClientAction::Demote => {
                let role = if action == ClientAction::Promote {
                    if rec.state != ClientState::Active {
                        return Err(CoreError::InvalidState(format!(
                            "the client is {}; only active clients can be promoted",
                            rec.state
                        )));
                    }
                    ClientRole::Admin
                } else {
                    ClientRole::Client
                };
                if role != rec.role {
                    self.store
                        .apply(Mutation::SetClientRole {
                            fingerprint: fp.clone(),
                            role,
                            at,
                        })
                        .await
                        .map_err(|e| CoreError::from_store(e, "client"))?;
                    rec.role = role;
                    rec.updated_at = at;
                }
            }
            ClientAction::Approve | ClientAction::Disable | ClientAction::Enable => {
                let next = match (action, rec.state) {
                    (ClientAction::Approve, ClientState::Pending) => ClientState::Active,
                    (ClientAction::Approve, s) => {
                        return Err(CoreError::InvalidState(format!(
                            "the client is {s}, not pending; only pending clients can be approved"
                        )));
                    }
                    (ClientAction::Enable, ClientState::Pending) => {
                        return Err(CoreError::InvalidState(
                            "the client is pending: approve it instead".into(),
                        ));
                    }
                    (ClientAction::Disable, _) => ClientState::Disabled,
                    _ => ClientState::Active,
                };
                if next != rec.state {
                    self.store
                        .apply(Mutation::SetClientState {
                            fingerprint: fp.clone(),
                            state: next,
                            at,
                        })
                        .await
                        .map_err(|e| CoreError::from_store(e, "client"))?;
                    rec.state = next;
                    rec.updated_at = at;
                }
            }
        }
        self.forget_identity(fp);
        Ok(client_info(&rec))
    }
}
