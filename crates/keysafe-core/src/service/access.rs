//! Who may do what to a deposit. A deposit belongs to a client or to a group; members of the
//! owning group act as owners. Other clients reach it only through a grant to them or to one of
//! their groups, within the owner's organisation. Without access a deposit does not exist as far
//! as the caller can tell (the same `not_found` as a missing name).

use super::{Caller, Service};
use crate::error::CoreError;
use crate::store::DepositKey;
use keysafe_proto::api::Access;
use keysafe_proto::{DepositName, Principal};

/// The caller's relation to a deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    Reader,
    Writer,
    Owner,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "read",
            Role::Writer => "write",
            Role::Owner => "owner",
        }
    }
}

impl Caller {
    /// Parses a principal named on the wire (`FP` or `group:NAME`, in the caller's organisation);
    /// a malformed one is bad input.
    pub(crate) fn principal(&self, s: &str) -> Result<Principal, CoreError> {
        Principal::parse_in(s, &self.org)
            .map_err(|e| CoreError::InvalidInput(e.message().to_owned()))
    }
}

impl Service {
    /// Parses an `owner` parameter (absent: the caller).
    pub(crate) fn owner_principal(
        caller: &Caller,
        owner: Option<&str>,
    ) -> Result<Principal, CoreError> {
        match owner {
            None | Some("") => Ok(Principal::Client(caller.fingerprint.clone())),
            Some(o) => caller.principal(o),
        }
    }

    /// Whether the caller belongs to the group.
    pub(crate) async fn is_member(
        &self,
        caller: &Caller,
        group: &Principal,
    ) -> Result<bool, CoreError> {
        let Principal::Group { org, name } = group else {
            return Ok(false);
        };
        if org != &caller.org {
            return Ok(false);
        }
        Ok(self
            .member_groups(org, &caller.fingerprint)
            .await?
            .contains(name))
    }

    /// The principals a caller acts as: itself and each group it belongs to.
    pub(crate) async fn principals_of(&self, caller: &Caller) -> Result<Vec<Principal>, CoreError> {
        let mut out = vec![Principal::Client(caller.fingerprint.clone())];
        for name in self.member_groups(&caller.org, &caller.fingerprint).await? {
            out.push(Principal::Group {
                org: caller.org.clone(),
                name,
            });
        }
        Ok(out)
    }

    /// Resolves the deposit a request names and the caller's role on it, or `not_found`.
    pub(crate) async fn resolve(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
    ) -> Result<(DepositKey, Role), CoreError> {
        let owner = Self::owner_principal(caller, owner)?;
        let own = match &owner {
            Principal::Client(fp) => fp == &caller.fingerprint,
            group => self.is_member(caller, group).await?,
        };
        let key = DepositKey { owner, name };
        if own {
            return Ok((key, Role::Owner));
        }
        let grants = self.verified_grants(&key).await?;
        if grants.is_empty() {
            return Err(CoreError::NotFound("deposit"));
        }
        let mine = self.principals_of(caller).await?;
        let best = grants
            .iter()
            .filter(|g| mine.contains(&g.grantee))
            .map(|g| match g.access {
                Access::Read => Role::Reader,
                Access::Write => Role::Writer,
            })
            .max()
            .ok_or(CoreError::NotFound("deposit"))?;
        Ok((key, best))
    }

    /// Like [`Service::resolve`], and the caller needs at least `need`.
    pub(crate) async fn resolve_for(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: DepositName,
        need: Role,
    ) -> Result<(DepositKey, Role), CoreError> {
        let (key, role) = self.resolve(caller, owner, name).await?;
        if role < need {
            return Err(CoreError::Forbidden(match need {
                Role::Owner => "only the deposit's owner may do this".into(),
                _ => "this deposit is shared with you read-only".into(),
            }));
        }
        Ok((key, role))
    }
}
