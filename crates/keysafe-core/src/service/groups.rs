//! Groups: several clients of one organisation sharing an age identity, so that deposits shared
//! with (or owned by) the group are readable by every member without copying private keys
//! between hosts. The group identity exists in the clear only on members' hosts; the server keeps
//! its public recipient and, per member, a copy wrapped (age-encrypted) to that member's own
//! recipient.
//!
//! Membership is decided by administrators. An administrator creates a group of any members in
//! any organisation; an ordinary client creates one only with itself as its only member (so a
//! client can never put others in a group they did not ask for). A member added later gets no
//! key until a current member admits it, wrapping every epoch's identity for it; a second
//! admission that hands the same member a different key for an epoch it already holds is a
//! conflict, never silently ignored. Removing a member opens a new epoch: the administrator's
//! client generates a new identity wrapped for the remaining members, and later writes use it.

use super::clients::{ADMIN_ORG, validate_recipient};
use super::{Caller, Service};
use crate::error::CoreError;
use crate::store::{GroupRecord, Mutation, StoreError, WrappedKeyRecord};
use base64::Engine;
use keysafe_proto::api::{
    EpochKey, GroupAdmitRequest, GroupCreateRequest, GroupInfo, GroupKeys, GroupList, GroupMember,
    GroupRemoveMember, MemberKey,
};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName};

/// The largest wrapped identity accepted (an age file holding one identity is ~300 bytes).
const MAX_WRAPPED: usize = 8 * 1024;
const MAX_MEMBERS: usize = 1024;

fn decode_wrapped(w: &str) -> Result<Vec<u8>, CoreError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(w)
        .map_err(|_| CoreError::InvalidInput("a wrapped key is not base64".into()))?;
    if raw.is_empty() || raw.len() > MAX_WRAPPED {
        return Err(CoreError::InvalidInput(format!(
            "a wrapped key is 1-{MAX_WRAPPED} bytes"
        )));
    }
    Ok(raw)
}

fn admission_conflict(epoch: u64) -> CoreError {
    CoreError::Conflict(format!(
        "the member already holds a different key for epoch {epoch}: another member admitted it \
         first; check which identity it holds before admitting again"
    ))
}

fn group_error(e: StoreError) -> CoreError {
    CoreError::from_store(e, "group")
}

impl Service {
    async fn group_info(&self, g: &GroupRecord) -> Result<GroupInfo, CoreError> {
        let mut members = Vec::with_capacity(g.members.len());
        for m in &g.members {
            let recipient = self
                .verified_client(&m.fingerprint)
                .await?
                .and_then(|c| c.recipient);
            members.push(GroupMember {
                fingerprint: m.fingerprint.clone(),
                recipient,
                has_current_key: m.epochs.contains(&g.epoch),
                epochs: m.epochs.clone(),
            });
        }
        Ok(GroupInfo {
            org: g.org.clone(),
            name: g.name.clone(),
            epoch: g.epoch,
            recipient: g.epochs.last().map(|(_, r)| r.clone()).unwrap_or_default(),
            members,
            created_at: g.created_at,
            updated_at: g.updated_at,
        })
    }

    /// Checks a set of member keys: each member an existing client of `org`, no duplicates.
    async fn member_keys(
        &self,
        org: &OrgName,
        epoch: u64,
        keys: &[MemberKey],
    ) -> Result<Vec<WrappedKeyRecord>, CoreError> {
        if keys.is_empty() || keys.len() > MAX_MEMBERS {
            return Err(CoreError::InvalidInput(format!(
                "a group has 1-{MAX_MEMBERS} members"
            )));
        }
        let mut out: Vec<WrappedKeyRecord> = Vec::with_capacity(keys.len());
        for k in keys {
            if out.iter().any(|o| o.member == k.fingerprint) {
                return Err(CoreError::InvalidInput(format!(
                    "member {} is listed twice",
                    k.fingerprint
                )));
            }
            let client = self.verified_client(&k.fingerprint).await?;
            if client.is_none_or(|c| &c.org != org) {
                return Err(CoreError::NotFound("member client in the organisation"));
            }
            out.push(WrappedKeyRecord {
                epoch,
                member: k.fingerprint.clone(),
                wrapped: decode_wrapped(&k.wrapped)?,
            });
        }
        Ok(out)
    }

    /// Creates a group. An administrator names the organisation and any members; an ordinary
    /// client creates one in its own organisation with itself as the only member.
    pub async fn create_group(
        &self,
        caller: &Caller,
        req: GroupCreateRequest,
        as_admin: bool,
    ) -> Result<GroupInfo, CoreError> {
        let org = if as_admin {
            caller.require_admin()?;
            let org = req
                .org
                .clone()
                .ok_or_else(|| CoreError::InvalidInput("name the organisation (org)".into()))?;
            if self.store.get_org(&org).await?.is_none() {
                return Err(CoreError::NotFound("organisation"));
            }
            org
        } else {
            if req.org.as_ref().is_some_and(|o| o != &caller.org) {
                return Err(CoreError::Forbidden(
                    "a client creates groups in its own organisation only".into(),
                ));
            }
            if !req
                .members
                .iter()
                .any(|m| m.fingerprint == caller.fingerprint)
            {
                return Err(CoreError::InvalidInput(
                    "the creating client must be a member (wrap the identity for yourself)".into(),
                ));
            }
            if !caller.is_admin() && req.members.len() != 1 {
                return Err(CoreError::Forbidden(
                    "a client creates a group with itself as its only member; an administrator \
                     adds the others (keysafe admin group add-member), then a member admits them"
                        .into(),
                ));
            }
            caller.org.clone()
        };
        if org.as_str() == ADMIN_ORG && !as_admin {
            return Err(CoreError::Forbidden(format!("no groups in {ADMIN_ORG}")));
        }
        validate_recipient(&req.recipient)?;
        let keys = self.member_keys(&org, 1, &req.members).await?;
        self.apply_audited(Mutation::CreateGroup {
            org: org.clone(),
            name: req.name.clone(),
            recipient: req.recipient,
            keys,
            at: self.clock.now(),
        })
        .await
        .map_err(group_error)?;
        self.group_for_admin(caller, &org, &req.name).await
    }

    /// A group as an administrator sees it.
    pub async fn group_for_admin(
        &self,
        caller: &Caller,
        org: &OrgName,
        name: &GroupName,
    ) -> Result<GroupInfo, CoreError> {
        let g = self
            .verified_group(org, name)
            .await?
            .ok_or(CoreError::NotFound("group"))?;
        if !caller.is_admin()
            && !g
                .members
                .iter()
                .any(|m| m.fingerprint == caller.fingerprint)
        {
            return Err(CoreError::NotFound("group"));
        }
        self.group_info(&g).await
    }

    /// A group of the caller's organisation the caller belongs to.
    pub async fn group(&self, caller: &Caller, name: &GroupName) -> Result<GroupInfo, CoreError> {
        let g = self.member_group(caller, name).await?;
        self.group_info(&g).await
    }

    async fn member_group(
        &self,
        caller: &Caller,
        name: &GroupName,
    ) -> Result<GroupRecord, CoreError> {
        let g = self
            .verified_group(&caller.org, name)
            .await?
            .ok_or(CoreError::NotFound("group"))?;
        if g.members
            .iter()
            .any(|m| m.fingerprint == caller.fingerprint)
        {
            Ok(g)
        } else {
            Err(CoreError::NotFound("group"))
        }
    }

    /// Groups the caller belongs to, or (administrators) every group, optionally of one
    /// organisation.
    pub async fn list_groups(
        &self,
        caller: &Caller,
        as_admin: bool,
        org: Option<&OrgName>,
    ) -> Result<GroupList, CoreError> {
        let records = if as_admin {
            caller.require_admin()?;
            self.store.list_groups(org, None).await?
        } else {
            self.store
                .list_groups(Some(&caller.org), Some(&caller.fingerprint))
                .await?
        };
        let mut groups = Vec::with_capacity(records.len());
        for g in &records {
            self.verify_group(g)?;
            groups.push(self.group_info(g).await?);
        }
        Ok(GroupList { groups })
    }

    /// The group identities wrapped for the caller, every epoch it holds.
    pub async fn group_keys(
        &self,
        caller: &Caller,
        name: &GroupName,
    ) -> Result<GroupKeys, CoreError> {
        let g = self.member_group(caller, name).await?;
        let keys = self
            .store
            .group_keys(&caller.org, name, &caller.fingerprint)
            .await?;
        Ok(GroupKeys {
            group: name.clone(),
            epoch: g.epoch,
            keys: keys
                .iter()
                .map(|k| EpochKey {
                    epoch: k.epoch,
                    recipient: g
                        .epochs
                        .iter()
                        .find(|(e, _)| *e == k.epoch)
                        .map(|(_, r)| r.clone())
                        .unwrap_or_default(),
                    wrapped: base64::engine::general_purpose::STANDARD.encode(&k.wrapped),
                })
                .collect(),
        })
    }

    /// A member hands the group identities it holds to another member.
    pub async fn admit_member(
        &self,
        caller: &Caller,
        name: &GroupName,
        req: GroupAdmitRequest,
    ) -> Result<GroupInfo, CoreError> {
        let g = self.member_group(caller, name).await?;
        let mine = g
            .members
            .iter()
            .find(|m| m.fingerprint == caller.fingerprint)
            .map(|m| m.epochs.clone())
            .unwrap_or_default();
        if !g.members.iter().any(|m| m.fingerprint == req.member) {
            return Err(CoreError::NotFound(
                "member (an administrator adds members first)",
            ));
        }
        if req.keys.is_empty() {
            return Err(CoreError::InvalidInput("no keys to admit with".into()));
        }
        let held = self
            .store
            .group_keys(&caller.org, name, &req.member)
            .await?;
        let mut keys: Vec<WrappedKeyRecord> = Vec::with_capacity(req.keys.len());
        for k in &req.keys {
            if !mine.contains(&k.epoch) {
                return Err(CoreError::InvalidInput(format!(
                    "you do not hold the identity of epoch {}",
                    k.epoch
                )));
            }
            if keys.iter().any(|o| o.epoch == k.epoch) {
                return Err(CoreError::InvalidInput(format!(
                    "epoch {} is listed twice",
                    k.epoch
                )));
            }
            let wrapped = decode_wrapped(&k.wrapped)?;
            match held.iter().find(|h| h.epoch == k.epoch) {
                // The same handover again (a retry): nothing to do.
                Some(h) if h.wrapped == wrapped => continue,
                Some(_) => return Err(admission_conflict(k.epoch)),
                None => {}
            }
            keys.push(WrappedKeyRecord {
                epoch: k.epoch,
                member: req.member.clone(),
                wrapped,
            });
        }
        if keys.is_empty() {
            return self.group(caller, name).await;
        }
        self.apply_audited(Mutation::AdmitGroupMember {
            org: caller.org.clone(),
            name: name.clone(),
            keys: keys.clone(),
            at: self.clock.now(),
        })
        .await
        .map_err(group_error)?;
        // Another member may have admitted the same member at the same time: the store keeps the
        // first key for an epoch, so a different one that lost is reported, not hidden.
        let stored = self
            .store
            .group_keys(&caller.org, name, &req.member)
            .await?;
        for k in &keys {
            if stored
                .iter()
                .any(|s| s.epoch == k.epoch && s.wrapped != k.wrapped)
            {
                return Err(admission_conflict(k.epoch));
            }
        }
        self.group(caller, name).await
    }

    /// An administrator adds a member (without keys: a current member admits it).
    pub async fn add_group_member(
        &self,
        admin: &Caller,
        org: &OrgName,
        name: &GroupName,
        member: &ClientFingerprint,
    ) -> Result<GroupInfo, CoreError> {
        admin.require_admin()?;
        if self
            .verified_client(member)
            .await?
            .is_none_or(|c| &c.org != org)
        {
            return Err(CoreError::NotFound("client in the organisation"));
        }
        self.apply_audited(Mutation::AddGroupMember {
            org: org.clone(),
            name: name.clone(),
            member: member.clone(),
            at: self.clock.now(),
        })
        .await
        .map_err(|e| match e {
            StoreError::AlreadyExists => CoreError::AlreadyExists("member"),
            other => group_error(other),
        })?;
        self.group_for_admin(admin, org, name).await
    }

    /// An administrator removes a member and opens a new epoch for the remaining ones.
    pub async fn remove_group_member(
        &self,
        admin: &Caller,
        org: &OrgName,
        name: &GroupName,
        req: GroupRemoveMember,
    ) -> Result<GroupInfo, CoreError> {
        admin.require_admin()?;
        let g = self
            .verified_group(org, name)
            .await?
            .ok_or(CoreError::NotFound("group"))?;
        if !g.members.iter().any(|m| m.fingerprint == req.member) {
            return Err(CoreError::NotFound("member"));
        }
        let remaining: Vec<&ClientFingerprint> = g
            .members
            .iter()
            .map(|m| &m.fingerprint)
            .filter(|f| **f != req.member)
            .collect();
        if remaining.is_empty() {
            return Err(CoreError::InvalidState(
                "the last member cannot be removed: nobody could read the group's deposits".into(),
            ));
        }
        validate_recipient(&req.recipient)?;
        let epoch = req.expected_epoch.saturating_add(1);
        let keys = self.member_keys(org, epoch, &req.keys).await?;
        let mut covered: Vec<&ClientFingerprint> = keys.iter().map(|k| &k.member).collect();
        covered.sort();
        let mut want = remaining.clone();
        want.sort();
        if covered != want {
            return Err(CoreError::InvalidInput(
                "wrap the new identity for exactly the remaining members".into(),
            ));
        }
        self.apply_audited(Mutation::RemoveGroupMember {
            org: org.clone(),
            name: name.clone(),
            member: req.member,
            expected_epoch: req.expected_epoch,
            recipient: req.recipient,
            keys,
            at: self.clock.now(),
        })
        .await
        .map_err(group_error)?;
        self.group_for_admin(admin, org, name).await
    }
}
