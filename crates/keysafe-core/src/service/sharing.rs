//! Access-control lists. Payloads are encrypted on the client to the owner and every grantee, so
//! an ACL change comes with the re-encryption of every age-encoded version, made by the owner's
//! client, and the server swaps both in one transaction (compare-and-set on the current version
//! and the ACL serial). The server never sees plaintext; revoking re-encrypts without the
//! revoked recipient, which cannot take back what a reader already fetched.

use super::access::Role;
use super::deposits::deposit_info;
use super::{Caller, Service};
use crate::error::CoreError;
use crate::store::{DepositKey, GrantRecord, Mutation, VersionMeta};
use base64::Engine;
use keysafe_proto::api::{
    Acl, AclChange, AclUpdate, DepositInfo, Encoding, Grant, RecipientInfo, SharedDeposit,
    SharedList,
};
use keysafe_proto::{DepositName, Principal};
use std::collections::BTreeSet;
use zeroize::Zeroizing;

/// The longest ACL.
const MAX_GRANTS: usize = 256;

fn grant_info(g: &GrantRecord) -> Grant {
    Grant {
        grantee: g.grantee.wire(),
        access: g.access,
        granted_by: g.granted_by.clone(),
        granted_at: g.granted_at,
    }
}

impl Service {
    /// The age recipient of a client or of a group's current epoch, if it has one.
    pub(crate) async fn recipient_of(&self, p: &Principal) -> Result<Option<String>, CoreError> {
        Ok(match p {
            Principal::Client(fp) => self.verified_client(fp).await?.and_then(|c| c.recipient),
            Principal::Group { org, name } => self
                .verified_group(org, name)
                .await?
                .and_then(|g| g.epochs.last().map(|(_, r)| r.clone())),
        })
    }

    /// `GET /v1/recipients?principal=`: the recipient for a client or group of the caller's
    /// organisation.
    pub async fn recipient(
        &self,
        caller: &Caller,
        principal: &str,
    ) -> Result<RecipientInfo, CoreError> {
        let p = caller.principal(principal)?;
        self.check_in_org(caller, &p).await?;
        let recipient = self.recipient_of(&p).await?.ok_or_else(|| {
            CoreError::InvalidState(format!(
                "{p} has no age recipient (it registered for raw deposits only)"
            ))
        })?;
        Ok(RecipientInfo {
            principal: p.wire(),
            recipient,
        })
    }

    /// A principal must exist in the caller's organisation.
    async fn check_in_org(&self, caller: &Caller, p: &Principal) -> Result<(), CoreError> {
        let ok = match p {
            Principal::Client(fp) => self
                .verified_client(fp)
                .await?
                .is_some_and(|c| c.org == caller.org),
            Principal::Group { org, name } => {
                org == &caller.org && self.verified_group(org, name).await?.is_some()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(CoreError::NotFound("client or group in your organisation"))
        }
    }

    async fn acl_of(&self, key: &DepositKey, role: Role) -> Result<Acl, CoreError> {
        let dep = self
            .verified_deposit(key)
            .await?
            .ok_or(CoreError::NotFound("deposit"))?;
        let grants = self.verified_grants(key).await?;
        let mut recipients = Vec::with_capacity(grants.len() + 1);
        let mut recipient_principals = Vec::with_capacity(grants.len() + 1);
        for p in std::iter::once(&key.owner).chain(grants.iter().map(|g| &g.grantee)) {
            if let Some(r) = self.recipient_of(p).await?
                && !recipients.contains(&r)
            {
                recipient_principals.push(RecipientInfo {
                    principal: p.wire(),
                    recipient: r.clone(),
                });
                recipients.push(r);
            }
        }
        Ok(Acl {
            owner: key.owner.wire(),
            name: key.name.clone(),
            version: dep.current_version,
            acl_serial: dep.acl_serial,
            grants: grants.iter().map(grant_info).collect(),
            recipients,
            recipient_principals,
            caller_access: role.as_str().to_owned(),
        })
    }

    pub async fn get_acl(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
    ) -> Result<Acl, CoreError> {
        let (key, role) = self.resolve(caller, owner, name).await?;
        self.acl_of(&key, role).await
    }

    /// Applies one grant or revocation with the client's re-encryption of every age version.
    pub async fn update_acl(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
        update: AclUpdate,
    ) -> Result<Acl, CoreError> {
        let (key, role) = self.resolve_for(caller, owner, name, Role::Owner).await?;
        let mut turn = self.write_turns.take(&key).await;
        // Re-encrypts the versions stored now: none may still be on its way.
        turn.settle().await;
        let dep = self
            .verified_deposit(&key)
            .await?
            .ok_or(CoreError::NotFound("deposit"))?;
        if dep.deleted {
            return Err(CoreError::Deleted);
        }
        let now = self.clock.now();
        let mut grants = self.verified_grants(&key).await?;
        match &update.change {
            AclChange::Grant { grantee, access } => {
                let p = caller.principal(grantee)?;
                if p == key.owner {
                    return Err(CoreError::InvalidInput(
                        "the owner has full access already".into(),
                    ));
                }
                self.check_in_org(caller, &p).await?;
                grants.retain(|g| g.grantee != p);
                grants.push(GrantRecord {
                    grantee: p,
                    access: *access,
                    granted_by: caller.fingerprint.clone(),
                    granted_at: now,
                    mac: None,
                });
                if grants.len() > MAX_GRANTS {
                    return Err(CoreError::InvalidInput(format!(
                        "a deposit has at most {MAX_GRANTS} grants"
                    )));
                }
            }
            AclChange::Revoke { grantee } => {
                let p = caller.principal(grantee)?;
                let before = grants.len();
                grants.retain(|g| g.grantee != p);
                if grants.len() == before {
                    return Err(CoreError::NotFound("grant"));
                }
            }
        }
        // Every age-encoded version must come back re-encrypted, and nothing else.
        let metas = self.store.list_versions(&key).await?;
        let needed: BTreeSet<u64> = metas
            .iter()
            .filter(|m| m.encoding == Encoding::Age)
            .map(|m| m.version.get())
            .collect();
        let given: BTreeSet<u64> = update.versions.iter().map(|v| v.version.get()).collect();
        if given.len() != update.versions.len() {
            return Err(CoreError::InvalidInput(
                "a version is listed twice in the update".into(),
            ));
        }
        if given != needed {
            // Usually a put landed between the client's read and this update.
            return Err(CoreError::Conflict(format!(
                "the update must re-encrypt exactly the age-encoded versions {needed:?} (got \
                 {given:?}); read the deposit again and retry"
            )));
        }
        // Twice at most: a keyring version retired by another process between sealing and
        // storing is refused by the store, and the versions are sealed again.
        for attempt in 0..2 {
            let mut replace = Vec::with_capacity(update.versions.len());
            for v in &update.versions {
                let payload = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(&v.payload)
                        .map_err(|_| {
                            CoreError::InvalidInput(format!(
                                "version {}: payload is not base64",
                                v.version
                            ))
                        })?,
                );
                if payload.len() > self.limits.max_deposit_size {
                    return Err(CoreError::PayloadTooLarge {
                        limit: self.limits.max_deposit_size,
                    });
                }
                let Some(old) = metas.iter().find(|m| m.version == v.version) else {
                    return Err(CoreError::NotFound("version"));
                };
                replace.push(
                    self.seal_version(
                        &dep.org,
                        &key,
                        VersionMeta {
                            version: old.version,
                            size: payload.len() as u64,
                            created_at: old.created_at,
                            creator: old.creator.clone(),
                            encoding: Encoding::Age,
                        },
                        &payload,
                    )
                    .await?,
                );
            }
            let wrapped_with = replace.first().map(|r| r.kek_version);
            let reloads = self.reloads_seen();
            match self
                .apply_audited(Mutation::SetAcl {
                    key: key.clone(),
                    expected_current: update.expected_version,
                    expected_acl_serial: update.expected_acl_serial,
                    grants: grants.clone(),
                    replace,
                    at: now,
                })
                .await
            {
                Ok(_) => break,
                Err(crate::store::StoreError::Unavailable(_))
                    if attempt == 0
                        && match wrapped_with {
                            Some(v) => self.kek_retired(v, reloads).await,
                            None => false,
                        } => {}
                Err(e) => return Err(CoreError::from_store(e, "deposit")),
            }
        }
        self.acl_of(&key, role).await
    }

    /// Deposits other principals own that the caller (or one of its groups) was granted.
    pub async fn list_shared(&self, caller: &Caller) -> Result<SharedList, CoreError> {
        let mine = self.principals_of(caller).await?;
        let rows = self.store.list_shared(&mine).await?;
        let mut deposits: Vec<SharedDeposit> = Vec::new();
        for (d, g) in rows {
            if mine.contains(&d.owner) {
                continue;
            }
            self.verify_deposit(&d)?;
            let key = DepositKey {
                owner: d.owner.clone(),
                name: d.name.clone(),
            };
            self.verify_grant(&key, &g)?;
            let info: DepositInfo = deposit_info(&d);
            // One row per deposit, with the strongest access.
            if let Some(existing) = deposits
                .iter_mut()
                .find(|s| s.owner == info.owner && s.name == info.name)
            {
                if g.access > existing.access {
                    existing.access = g.access;
                    existing.via = g.grantee.wire();
                }
                continue;
            }
            deposits.push(SharedDeposit {
                owner: info.owner,
                name: info.name,
                version: info.version,
                access: g.access,
                via: g.grantee.wire(),
            });
        }
        Ok(SharedList { deposits })
    }
}
