//! Organisations: created and re-keyed by administrators (checked here, whatever the caller's
//! transport already checked). Auth secrets are generated here, shown once, and stored only as
//! Argon2id hashes.

use super::{Caller, Service};
use crate::error::CoreError;
use crate::secrets;
use crate::store::{Mutation, OrgRecord};
use keysafe_proto::OrgName;
use keysafe_proto::api::{
    AuthMode, AuthSecret, OrgCreateRequest, OrgCreated, OrgInfo, OrgSetAuthRequest,
    OrgSetAuthResponse,
};

pub(crate) fn org_info(r: &OrgRecord) -> OrgInfo {
    OrgInfo {
        name: r.name.clone(),
        contacts: r.contacts.clone(),
        auth_mode: r.auth_mode,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// Hashes off the async runtime: Argon2id takes tens of milliseconds by design.
pub(crate) async fn hash_off_runtime(secret: AuthSecret) -> Result<String, CoreError> {
    tokio::task::spawn_blocking(move || secrets::hash_secret(&secret))
        .await
        .map_err(|e| CoreError::Internal(format!("hashing task failed: {e}")))?
        .map_err(CoreError::from)
}

fn validate_contacts(contacts: &[String]) -> Result<(), CoreError> {
    if contacts.len() > 16 {
        return Err(CoreError::InvalidInput("at most 16 contacts".into()));
    }
    for c in contacts {
        let ok = c.len() <= 254
            && c.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
            && !c.chars().any(|ch| ch.is_whitespace() || ch.is_control());
        if !ok {
            return Err(CoreError::InvalidInput(format!(
                "invalid contact {c:?}: expected an e-mail address"
            )));
        }
    }
    Ok(())
}

impl Service {
    pub async fn create_org(
        &self,
        admin: &Caller,
        req: OrgCreateRequest,
    ) -> Result<OrgCreated, CoreError> {
        admin.require_admin()?;
        validate_contacts(&req.contacts)?;
        let secret = secrets::generate_secret()?;
        let hash = hash_off_runtime(secret.clone()).await?;
        let now = self.clock.now();
        self.apply_audited(Mutation::CreateOrg(OrgRecord {
            name: req.name.clone(),
            contacts: req.contacts,
            auth_mode: AuthMode::Secret,
            auth_hash: Some(hash),
            created_at: now,
            updated_at: now,
        }))
        .await
        .map_err(|e| CoreError::from_store(e, "organisation"))?;
        Ok(OrgCreated {
            name: req.name,
            auth_secret: secret,
        })
    }

    pub async fn list_orgs(&self, admin: &Caller) -> Result<Vec<OrgInfo>, CoreError> {
        admin.require_admin()?;
        Ok(self.store.list_orgs().await?.iter().map(org_info).collect())
    }

    pub async fn set_org_auth(
        &self,
        admin: &Caller,
        name: &OrgName,
        req: OrgSetAuthRequest,
    ) -> Result<OrgSetAuthResponse, CoreError> {
        admin.require_admin()?;
        let (mode, hash, shown) = match req {
            OrgSetAuthRequest::Random => {
                let s = secrets::generate_secret()?;
                (
                    AuthMode::Secret,
                    Some(hash_off_runtime(s.clone()).await?),
                    Some(s),
                )
            }
            OrgSetAuthRequest::Secret { secret } => {
                if secret.expose().chars().count() < AuthSecret::MIN_LEN {
                    return Err(CoreError::InvalidInput(format!(
                        "an auth secret must be at least {} characters",
                        AuthSecret::MIN_LEN
                    )));
                }
                if secret
                    .expose()
                    .starts_with(keysafe_proto::REGISTRATION_TOKEN_PREFIX)
                {
                    return Err(CoreError::InvalidInput(format!(
                        "an auth secret must not start with {:?}: that prefix marks one-time \
                         registration tokens",
                        keysafe_proto::REGISTRATION_TOKEN_PREFIX
                    )));
                }
                (
                    AuthMode::Secret,
                    Some(hash_off_runtime(secret).await?),
                    None,
                )
            }
            OrgSetAuthRequest::Approval => (AuthMode::Approval, None, None),
        };
        self.apply_audited(Mutation::SetOrgAuth {
            name: name.clone(),
            mode,
            auth_hash: hash,
            at: self.clock.now(),
        })
        .await
        .map_err(|e| CoreError::from_store(e, "organisation"))?;
        Ok(OrgSetAuthResponse {
            name: name.clone(),
            auth_mode: mode,
            auth_secret: shown,
        })
    }
}

impl Service {
    /// How clients register into `name` (`None`: no such organisation). For the registration
    /// limits, which treat registrations that would leave a pending client apart; reveals
    /// nothing to the caller.
    pub async fn registration_mode(&self, name: &OrgName) -> Result<Option<AuthMode>, CoreError> {
        Ok(self.store.get_org(name).await?.map(|o| o.auth_mode))
    }
}

#[cfg(test)]
mod tests {
    use super::validate_contacts;

    #[test]
    fn contacts() {
        assert!(validate_contacts(&["ops@example.com".into()]).is_ok());
        assert!(validate_contacts(&["nope".into()]).is_err());
        assert!(validate_contacts(&["a b@example.com".into()]).is_err());
    }
}
