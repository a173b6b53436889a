//! Clients: registration into an organisation (by auth secret, or pending an administrator's
//! approval) and the administrator's lifecycle actions.

use super::tokens::{IssuedToken, new_token};
use super::{Caller, Service};
use crate::error::CoreError;
use crate::secrets;
use crate::store::{
    Applied, ClientRecord, Mutation, OrgRecord, RegistrationTokenRecord, StoreError,
};
use keysafe_proto::api::{
    AuthMode, ClientInfo, ClientRole, ClientState, RegisterRequest, RegistrationToken,
};
use keysafe_proto::{ClientFingerprint, ClientName, OrgName, REGISTRATION_TOKEN_PREFIX};
use std::str::FromStr;
use std::time::Duration;

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
    /// Clears the client's sequenced token (its next request is issued a fresh one) and lifts a
    /// suspected-clone lock.
    ResetToken,
}

/// Checks that a string is an age X25519 recipient (`age1...`).
pub(crate) fn validate_recipient(r: &str) -> Result<(), CoreError> {
    age::x25519::Recipient::from_str(r)
        .map(|_| ())
        .map_err(|_| {
            CoreError::InvalidInput(format!(
                "{:?} is not an age X25519 recipient (age1...)",
                r.chars().take(80).collect::<String>()
            ))
        })
}

/// The longest lifetime of a one-time registration token.
pub const MAX_REGISTRATION_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_REGISTRATION_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub(crate) fn client_info(r: &ClientRecord) -> ClientInfo {
    ClientInfo {
        fingerprint: r.fingerprint.clone(),
        org: r.org.clone(),
        name: r.name.clone(),
        state: r.state,
        role: r.role,
        recipient: r.recipient.clone(),
        state_reason: r.state_reason.clone(),
        last_seen_at: r.last_seen_at,
        token_counter: r.token.counter,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// Clients registered before this, `older_than` before `now`, count as never activated.
pub(crate) fn unactivated_cutoff(
    now: keysafe_proto::Timestamp,
    older_than: Duration,
) -> keysafe_proto::Timestamp {
    keysafe_proto::Timestamp::from_unix_millis(
        now.unix_millis()
            .saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX)),
    )
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
    ) -> Result<(ClientInfo, IssuedToken), CoreError> {
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
        if let Some(r) = &req.recipient {
            validate_recipient(r)?;
        }
        let org = self.store.get_org(&req.org).await?;
        let one_time = req
            .auth_secret
            .as_ref()
            .filter(|s| s.expose().starts_with(REGISTRATION_TOKEN_PREFIX))
            .map(|s| secrets::token_hash(s.expose()));
        let state = match (&one_time, &org) {
            // A token an administrator minted stands for the administrator's approval.
            (Some(_), Some(_)) => ClientState::Active,
            (Some(_), None) => return Err(CoreError::InvalidAuth),
            (None, _) => self.check_registration_auth(org.as_ref(), &req).await?,
        };
        let now = self.clock.now();
        let (token, token_state) = new_token(0, Vec::new(), now)?;
        let rec = ClientRecord {
            fingerprint: fp.clone(),
            org: req.org,
            name: req.name,
            state,
            role: ClientRole::Client,
            cert_der: cert.to_vec(),
            recipient: req.recipient,
            token: token_state,
            last_seen_at: None,
            state_reason: None,
            created_at: now,
            updated_at: now,
            mac: None,
        };
        self.apply_audited(Mutation::InsertClient {
            client: rec.clone(),
            consume_token: one_time,
        })
        .await
        .map_err(|e| match e {
            StoreError::AlreadyExists => CoreError::AlreadyRegistered,
            // The one-time token is unknown, used, expired or for another organisation.
            StoreError::NotFound => CoreError::InvalidAuth,
            other => CoreError::from_store(other, "client"),
        })?;
        Ok((client_info(&rec), token))
    }

    /// Mints a single-use registration token for an organisation. Only its hash is stored.
    pub async fn mint_registration_token(
        &self,
        admin: &Caller,
        org: &OrgName,
        ttl: Option<Duration>,
    ) -> Result<RegistrationToken, CoreError> {
        admin.require_admin()?;
        if org.as_str() == ADMIN_ORG {
            return Err(CoreError::Forbidden(format!(
                "nobody registers into {ADMIN_ORG}"
            )));
        }
        if self.store.get_org(org).await?.is_none() {
            return Err(CoreError::NotFound("organisation"));
        }
        let ttl = ttl.unwrap_or(DEFAULT_REGISTRATION_TOKEN_TTL);
        if ttl.is_zero() || ttl > MAX_REGISTRATION_TOKEN_TTL {
            return Err(CoreError::InvalidInput(format!(
                "a registration token lives between 1 second and {} days",
                MAX_REGISTRATION_TOKEN_TTL.as_secs() / 86400
            )));
        }
        let raw = secrets::generate_secret()?;
        let token = keysafe_proto::api::AuthSecret::new(format!(
            "{REGISTRATION_TOKEN_PREFIX}{}",
            raw.expose()
        ));
        let now = self.clock.now();
        let expires_at = now.saturating_add(ttl);
        self.apply_audited(Mutation::InsertRegistrationToken(RegistrationTokenRecord {
            hash: secrets::token_hash(token.expose()),
            org: org.clone(),
            created_by: admin.fingerprint.clone(),
            created_at: now,
            expires_at,
        }))
        .await
        .map_err(|e| CoreError::from_store(e, "registration token"))?;
        Ok(RegistrationToken {
            org: org.clone(),
            token,
            expires_at,
        })
    }

    /// Disables ordinary clients that registered more than `older_than` ago and never made an
    /// authenticated request (KTS orgtool's disable-unactivated).
    pub async fn disable_unactivated(
        &self,
        admin: &Caller,
        older_than: Duration,
    ) -> Result<Vec<ClientInfo>, CoreError> {
        admin.require_admin()?;
        let now = self.clock.now();
        let cutoff = unactivated_cutoff(now, older_than);
        let applied = self
            .apply_audited(Mutation::DisableUnactivated {
                registered_before: cutoff,
                at: now,
            })
            .await?;
        let mut out = Vec::new();
        if let Applied::Clients(fps) = applied {
            for fp in fps {
                self.forget_identity(&fp);
                if let Some(rec) = self.verified_client(&fp).await? {
                    out.push(client_info(&rec));
                }
            }
        }
        Ok(out)
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
        recipient: Option<String>,
    ) -> Result<(ClientInfo, IssuedToken), CoreError> {
        if let Some(r) = &recipient {
            validate_recipient(r)?;
        }
        let org = OrgName::parse(ADMIN_ORG)?;
        let now = self.clock.now();
        match self
            .apply_audited(Mutation::CreateOrg(OrgRecord {
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
        let (token, token_state) = new_token(0, Vec::new(), now)?;
        let rec = ClientRecord {
            fingerprint: fingerprint.clone(),
            org,
            name: Some(name),
            state: ClientState::Active,
            role: ClientRole::Admin,
            cert_der: cert_der.to_vec(),
            recipient,
            token: token_state,
            last_seen_at: None,
            state_reason: None,
            created_at: now,
            updated_at: now,
            mac: None,
        };
        self.apply_audited(Mutation::InsertClient {
            client: rec.clone(),
            consume_token: None,
        })
        .await
        .map_err(|e| CoreError::from_store(e, "client"))?;
        Ok((client_info(&rec), token))
    }

    /// The caller's own record.
    pub async fn whoami(&self, caller: &Caller) -> Result<ClientInfo, CoreError> {
        let rec = self
            .verified_client(&caller.fingerprint)
            .await?
            .ok_or(CoreError::UnknownClient)?;
        Ok(client_info(&rec))
    }

    pub async fn list_clients(
        &self,
        admin: &Caller,
        org: Option<&OrgName>,
        state: Option<ClientState>,
    ) -> Result<Vec<ClientInfo>, CoreError> {
        admin.require_admin()?;
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
        admin.require_admin()?;
        let mut rec = self
            .verified_client(fp)
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
            ClientAction::ResetToken => {
                self.apply_audited(Mutation::ResetToken {
                    fingerprint: fp.clone(),
                    at,
                })
                .await
                .map_err(|e| CoreError::from_store(e, "client"))?;
                rec = self
                    .verified_client(fp)
                    .await?
                    .ok_or(CoreError::NotFound("client"))?;
            }
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
                    self.apply_audited(Mutation::SetClientRole {
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
                    (ClientAction::Enable, ClientState::SuspectedClone) => {
                        return Err(CoreError::InvalidState(
                            "the client is a suspected clone: reset its token instead".into(),
                        ));
                    }
                    (ClientAction::Disable, _) => ClientState::Disabled,
                    _ => ClientState::Active,
                };
                if next != rec.state {
                    self.apply_audited(Mutation::SetClientState {
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
