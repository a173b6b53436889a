//! The end of life, for administrators: deleting organisations, clients and groups (or saying
//! what a deletion would do: the same rule, read instead of applied; the rules themselves are
//! the store's, `store::lifecycle`), unused registration tokens listed and revoked, clients
//! listed page by page, the preview of `disable-unactivated`, and the offline recovery of a
//! locked administrator.

use super::clients::{ADMIN_ORG, client_info};
use super::{Caller, Service};
use crate::error::CoreError;
use crate::store::{
    Applied, ClientCursor, ClientListing, ClientRecord, Mutation, StoreError, refusal,
};
use keysafe_proto::api::{
    ClientDeletion, ClientInfo, ClientList, ClientListQuery, ClientRole, ClientState,
    GroupDeletion, OrgDeletion, RegistrationTokenInfo, RegistrationTokenList, RevokedTokens,
};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Timestamp};

/// Which unused registration tokens to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The one whose hash starts with this (hex, at least
    /// [`RegistrationTokenInfo::MIN_PREFIX`] characters, unambiguous).
    Id(String),
    /// Every unused one of the organisation.
    All,
}

/// Maps a refused deletion to the error that names what depends.
fn deletion_error(e: StoreError, what: &'static str, name: &str) -> CoreError {
    match e {
        StoreError::InUse(m) => CoreError::InUse(format!("cannot delete {what} {name}: {m}")),
        other => CoreError::from_store(other, what),
    }
}

fn refuse_if_blocked(blockers: Vec<String>, what: &str, name: &str) -> Result<(), CoreError> {
    if blockers.is_empty() {
        Ok(())
    } else {
        Err(CoreError::InUse(format!(
            "cannot delete {what} {name}: {}",
            refusal(&blockers)
        )))
    }
}

/// The page cursor on the wire: `ORG/MILLIS/FINGERPRINT` (organisation names hold no `/`).
fn encode_cursor(c: &ClientCursor) -> String {
    format!("{}/{}/{}", c.org, c.created_at.unix_millis(), c.fingerprint)
}

fn decode_cursor(s: &str) -> Result<ClientCursor, CoreError> {
    let bad = || {
        CoreError::InvalidInput(
            "after must be the next_after of a previous page of this listing".into(),
        )
    };
    let mut parts = s.splitn(3, '/');
    let (Some(org), Some(ms), Some(fp)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    Ok(ClientCursor {
        org: OrgName::parse(org).map_err(|_| bad())?,
        created_at: Timestamp::from_unix_millis(ms.parse().map_err(|_| bad())?),
        fingerprint: ClientFingerprint::parse(fp).map_err(|_| bad())?,
    })
}

impl Service {
    /// Deletes an empty organisation and its registration tokens, or (`dry_run`) says what
    /// that would remove. `InUse`: it still has clients or groups. The administrators'
    /// organisation is never deleted.
    pub async fn delete_org(
        &self,
        admin: &Caller,
        name: &OrgName,
        dry_run: bool,
    ) -> Result<OrgDeletion, CoreError> {
        admin.require_admin()?;
        if name.as_str() == ADMIN_ORG {
            return Err(CoreError::Forbidden(format!(
                "{ADMIN_ORG} holds the server administrators and cannot be deleted"
            )));
        }
        let deps = self
            .store
            .org_dependents(name)
            .await?
            .ok_or(CoreError::NotFound("organisation"))?;
        refuse_if_blocked(deps.blockers(), "organisation", name.as_str())?;
        if !dry_run {
            self.apply_audited(Mutation::DeleteOrg { name: name.clone() })
                .await
                .map_err(|e| deletion_error(e, "organisation", name.as_str()))?;
        }
        Ok(OrgDeletion {
            name: name.clone(),
            dry_run,
            unused_tokens: deps.unused_tokens,
        })
    }

    /// Deletes a client with its grants as a grantee, its group memberships and the identities
    /// wrapped for it, or (`dry_run`) says what that would remove. `InUse`: it owns deposits,
    /// is the only member of a group holding its current identity, or is the last active
    /// administrator. An administrator cannot delete its own identity.
    pub async fn delete_client(
        &self,
        admin: &Caller,
        fp: &ClientFingerprint,
        dry_run: bool,
    ) -> Result<ClientDeletion, CoreError> {
        admin.require_admin()?;
        if fp == &admin.fingerprint {
            return Err(CoreError::Forbidden(
                "an administrator cannot delete its own identity".into(),
            ));
        }
        let rec = self
            .verified_client(fp)
            .await?
            .ok_or(CoreError::NotFound("client"))?;
        let deps = self
            .store
            .client_dependents(fp)
            .await?
            .ok_or(CoreError::NotFound("client"))?;
        refuse_if_blocked(deps.blockers(), "client", fp.as_str())?;
        if !dry_run {
            self.apply_audited(Mutation::DeleteClient {
                fingerprint: fp.clone(),
                at: self.clock.now(),
            })
            .await
            .map_err(|e| deletion_error(e, "client", fp.as_str()))?;
            self.forget_identity(fp);
        }
        Ok(ClientDeletion {
            fingerprint: fp.clone(),
            org: rec.org,
            dry_run,
            memberships: deps.memberships.iter().map(|g| g.to_string()).collect(),
            grants: deps.grants.count,
            grants_sample: deps.grants.sample,
        })
    }

    /// Deletes a group with its epochs, members and wrapped identities, or (`dry_run`) says
    /// what that would remove. `InUse`: it owns deposits or a deposit grants it access.
    pub async fn delete_group(
        &self,
        admin: &Caller,
        org: &OrgName,
        name: &GroupName,
        dry_run: bool,
    ) -> Result<GroupDeletion, CoreError> {
        admin.require_admin()?;
        let shown = format!("{org}/{name}");
        let deps = self
            .store
            .group_dependents(org, name)
            .await?
            .ok_or(CoreError::NotFound("group"))?;
        refuse_if_blocked(deps.blockers(), "group", &shown)?;
        if !dry_run {
            self.apply_audited(Mutation::DeleteGroup {
                org: org.clone(),
                name: name.clone(),
            })
            .await
            .map_err(|e| deletion_error(e, "group", &shown))?;
        }
        Ok(GroupDeletion {
            org: org.clone(),
            name: name.clone(),
            dry_run,
            members: deps.members,
        })
    }

    /// The organisation's registration tokens that were never used, expired ones included.
    pub async fn list_registration_tokens(
        &self,
        admin: &Caller,
        org: &OrgName,
    ) -> Result<RegistrationTokenList, CoreError> {
        admin.require_admin()?;
        if self.store.get_org(org).await?.is_none() {
            return Err(CoreError::NotFound("organisation"));
        }
        let now = self.clock.now();
        let tokens = self
            .store
            .list_unused_tokens(org)
            .await?
            .into_iter()
            .map(|t| RegistrationTokenInfo {
                id: t.hash.chars().take(RegistrationTokenInfo::ID_LEN).collect(),
                created_at: t.created_at,
                expires_at: t.expires_at,
                expired: t.expires_at <= now,
                created_by: t.created_by,
            })
            .collect();
        Ok(RegistrationTokenList {
            org: org.clone(),
            tokens,
        })
    }

    /// Revokes (deletes) unused registration tokens: one named by an unambiguous prefix of its
    /// hash, or all of them. `NotFound`: no unused token has that prefix.
    pub async fn revoke_registration_tokens(
        &self,
        admin: &Caller,
        org: &OrgName,
        which: TokenSelector,
    ) -> Result<RevokedTokens, CoreError> {
        admin.require_admin()?;
        if let TokenSelector::Id(id) = &which {
            let hex = id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
            if id.len() < RegistrationTokenInfo::MIN_PREFIX || !hex {
                return Err(CoreError::InvalidInput(format!(
                    "a token id is the start of its hash as `org tokens` lists it: at least {} \
                     lowercase hex characters",
                    RegistrationTokenInfo::MIN_PREFIX
                )));
            }
        }
        if self.store.get_org(org).await?.is_none() {
            return Err(CoreError::NotFound("organisation"));
        }
        let unused = self.store.list_unused_tokens(org).await?;
        let hashes: Vec<String> = match &which {
            TokenSelector::All => unused.into_iter().map(|t| t.hash).collect(),
            TokenSelector::Id(id) => {
                let matching: Vec<String> = unused
                    .into_iter()
                    .map(|t| t.hash)
                    .filter(|h| h.starts_with(id.as_str()))
                    .collect();
                match matching.len() {
                    0 => return Err(CoreError::NotFound("unused registration token")),
                    1 => matching,
                    n => {
                        return Err(CoreError::InvalidInput(format!(
                            "{n} unused tokens start with {id}: give more characters"
                        )));
                    }
                }
            }
        };
        let applied = self
            .apply_audited(Mutation::RevokeRegistrationTokens {
                org: org.clone(),
                hashes,
            })
            .await
            .map_err(|e| CoreError::from_store(e, "organisation"))?;
        let revoked = match applied {
            Applied::Revoked(n) => n,
            _ => 0,
        };
        // Used between the listing and the revocation: it registered its client.
        if revoked == 0 && matches!(which, TokenSelector::Id(_)) {
            return Err(CoreError::NotFound("unused registration token"));
        }
        Ok(RevokedTokens {
            org: org.clone(),
            revoked,
        })
    }

    /// One page of clients in listing order (organisation, registration time, fingerprint),
    /// with the cursor of the next page when more follow.
    pub async fn list_clients_page(
        &self,
        admin: &Caller,
        org: Option<&OrgName>,
        state: Option<ClientState>,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<ClientList, CoreError> {
        admin.require_admin()?;
        let limit = match limit {
            None => ClientListQuery::MAX_LIMIT,
            Some(n) if (1..=ClientListQuery::MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                return Err(CoreError::InvalidInput(format!(
                    "limit must be between 1 and {}",
                    ClientListQuery::MAX_LIMIT
                )));
            }
        };
        let after = after.map(decode_cursor).transpose()?;
        // One more than asked tells whether another page follows.
        let mut page = self
            .store
            .list_clients_page(ClientListing {
                org,
                state,
                after: after.as_ref(),
                limit: limit + 1,
            })
            .await?;
        let more = page.len() > limit as usize;
        page.truncate(limit as usize);
        let next_after = more
            .then(|| page.last().map(|c| encode_cursor(&ClientCursor::after(c))))
            .flatten();
        Ok(ClientList {
            clients: page.iter().map(client_info).collect(),
            next_after,
        })
    }

    /// The clients `disable_unactivated(older_than)` would disable now, by fingerprint: the
    /// same rule as the store's `DisableUnactivated`, read instead of applied.
    pub async fn preview_unactivated(
        &self,
        admin: &Caller,
        older_than: std::time::Duration,
    ) -> Result<Vec<ClientInfo>, CoreError> {
        admin.require_admin()?;
        let cutoff = super::clients::unactivated_cutoff(self.clock.now(), older_than);
        let mut out: Vec<ClientRecord> = Vec::new();
        for state in [ClientState::Pending, ClientState::Active] {
            out.extend(
                self.store
                    .list_clients(None, Some(state))
                    .await?
                    .into_iter()
                    .filter(|c| {
                        c.role == ClientRole::Client
                            && c.last_seen_at.is_none()
                            && c.created_at < cutoff
                    }),
            );
        }
        out.sort_by(|a, b| a.fingerprint.as_str().cmp(b.fingerprint.as_str()));
        Ok(out.iter().map(client_info).collect())
    }

    /// The active administrators (for the offline recovery's check).
    pub async fn active_admins(&self) -> Result<Vec<ClientInfo>, CoreError> {
        let org = OrgName::parse(ADMIN_ORG)?;
        let mut out: Vec<ClientInfo> = Vec::new();
        for c in self
            .store
            .list_clients(None, Some(ClientState::Active))
            .await?
        {
            if c.role == ClientRole::Admin {
                out.push(client_info(&c));
            }
        }
        // Administrators of the administrators' organisation first.
        out.sort_by_key(|c| c.org != org);
        Ok(out)
    }

    /// Offline recovery: makes an existing client an active administrator with a cleared token
    /// (its next request is issued a fresh one), whatever its state and role. No caller: it is
    /// run by whoever holds the data directory, and audited as such by the caller's scope.
    pub async fn recover_admin(&self, fp: &ClientFingerprint) -> Result<ClientInfo, CoreError> {
        self.apply_audited(Mutation::RecoverAdmin {
            fingerprint: fp.clone(),
            at: self.clock.now(),
        })
        .await
        .map_err(|e| CoreError::from_store(e, "client"))?;
        self.forget_identity(fp);
        let rec = self
            .verified_client(fp)
            .await?
            .ok_or(CoreError::NotFound("client"))?;
        Ok(client_info(&rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let c = ClientCursor {
            org: OrgName::parse("acme.eu").unwrap(),
            created_at: Timestamp::from_unix_millis(1_764_000_000_123),
            fingerprint: ClientFingerprint::parse(&"ab".repeat(32)).unwrap(),
        };
        let s = encode_cursor(&c);
        assert_eq!(s, format!("acme.eu/1764000000123/{}", "ab".repeat(32)));
        assert_eq!(decode_cursor(&s).unwrap(), c);
        for bad in ["", "acme", "acme/12", "acme/x/ab", "a b/1/ab", "acme/1/xyz"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
