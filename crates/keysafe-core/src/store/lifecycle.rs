//! The end of a record's life: what still depends on an organisation, a client or a group
//! (the same rules decide a deletion preview and the deletion itself, inside its transaction),
//! registration tokens that were never used, and clients listed page by page.
//!
//! The rules, which docs/api.md states for operators:
//! - an organisation can be deleted once it has no clients and no groups (every deposit is
//!   owned by one of them, and they cannot be deleted while they own any); its registration
//!   tokens go with it;
//! - a client can be deleted unless it owns deposits (soft-deleted ones too), is the only
//!   member of a group holding that group's current identity, or is an administrator and no
//!   other active administrator exists; its grants as a grantee (each such deposit's ACL serial
//!   moves on), its group memberships and the identities wrapped for it go with it;
//! - a group can be deleted unless it owns deposits or is a grantee of a deposit; its epochs,
//!   members and wrapped identities go with it.

use super::records::RegistrationTokenRecord;
use async_trait::async_trait;
use keysafe_proto::api::ClientState;
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Timestamp};

use super::{ClientRecord, StoreResult};

/// How many objects of a kind, with the first few of them named (ordered by bytes), so that a
/// refusal can say which.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    pub count: u64,
    /// At most [`Counted::SAMPLE`] names: `owner/name` for deposits.
    pub sample: Vec<String>,
}

impl Counted {
    /// How many names a sample holds at most.
    pub const SAMPLE: usize = 5;

    /// `3 deposits (a, b, c)`, `1 deposit (a)`, `7 deposits (a, b, c, d, e, and 2 more)`.
    fn describe(&self, one: &str, many: &str) -> String {
        let noun = if self.count == 1 { one } else { many };
        let mut names = self.sample.join(", ");
        let rest = self.count.saturating_sub(self.sample.len() as u64);
        if rest > 0 && !names.is_empty() {
            names.push_str(&format!(", and {rest} more"));
        }
        if names.is_empty() {
            format!("{} {noun}", self.count)
        } else {
            format!("{} {noun} ({names})", self.count)
        }
    }
}

/// A group, qualified by its organisation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupRef {
    pub org: OrgName,
    pub name: GroupName,
}

impl std::fmt::Display for GroupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.org, self.name)
    }
}

/// What an organisation still holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgDependents {
    /// Clients of any state.
    pub clients: Counted,
    pub groups: Counted,
    /// Registration tokens never used (expired ones too): deleted with the organisation.
    pub unused_tokens: u64,
}

impl OrgDependents {
    /// What prevents the deletion, one phrase each; empty when nothing does.
    pub fn blockers(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.clients.count > 0 {
            out.push(format!(
                "it still has {}",
                self.clients.describe("client", "clients")
            ));
        }
        if self.groups.count > 0 {
            out.push(format!(
                "it still has {}",
                self.groups.describe("group", "groups")
            ));
        }
        out
    }
}

/// What depends on a client, and what would go with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientDependents {
    /// Deposits it owns, soft-deleted ones included (`name`).
    pub owned_deposits: Counted,
    /// Groups in which it is the only member holding the current epoch's identity.
    pub sole_key_holder_of: Vec<GroupRef>,
    /// It is an administrator and no other active administrator exists.
    pub last_active_admin: bool,
    /// Groups it belongs to (by organisation, then name): its membership and wrapped
    /// identities go with it.
    pub memberships: Vec<GroupRef>,
    /// Deposits that grant it access (`owner/name`): the grants go with it.
    pub grants: Counted,
}

impl ClientDependents {
    /// What prevents the deletion, one phrase each; empty when nothing does.
    pub fn blockers(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.owned_deposits.count > 0 {
            out.push(format!(
                "it owns {} (purge them first)",
                self.owned_deposits.describe("deposit", "deposits")
            ));
        }
        for g in &self.sole_key_holder_of {
            out.push(format!(
                "it is the only member of group {g} holding the group's current key (admit \
                 another member or delete the group first)"
            ));
        }
        if self.last_active_admin {
            out.push("it is the last active administrator".to_owned());
        }
        out
    }
}

/// What depends on a group, and what would go with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupDependents {
    /// Deposits it owns, soft-deleted ones included (`name`).
    pub owned_deposits: Counted,
    /// Deposits that grant the group access (`owner/name`).
    pub grants: Counted,
    /// Its members: their memberships and wrapped identities go with it.
    pub members: u64,
}

impl GroupDependents {
    /// What prevents the deletion, one phrase each; empty when nothing does.
    pub fn blockers(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.owned_deposits.count > 0 {
            out.push(format!(
                "it owns {} (purge them first)",
                self.owned_deposits.describe("deposit", "deposits")
            ));
        }
        if self.grants.count > 0 {
            out.push(format!(
                "it is a grantee of {} (their owners must revoke the grants first)",
                self.grants.describe("deposit", "deposits")
            ));
        }
        out
    }
}

/// The message of a refused deletion: the blockers, joined.
pub fn refusal(blockers: &[String]) -> String {
    blockers.join("; ")
}

/// Where a page of clients starts: strictly after this client in the listing order
/// (organisation, registration time, fingerprint; names as bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCursor {
    pub org: OrgName,
    pub created_at: Timestamp,
    pub fingerprint: ClientFingerprint,
}

impl ClientCursor {
    /// The cursor that continues after `c`.
    pub fn after(c: &ClientRecord) -> Self {
        Self {
            org: c.org.clone(),
            created_at: c.created_at,
            fingerprint: c.fingerprint.clone(),
        }
    }
}

/// Which clients to list, one page.
#[derive(Debug, Clone)]
pub struct ClientListing<'a> {
    /// Only this organisation's (all when `None`).
    pub org: Option<&'a OrgName>,
    /// Only clients in this state (any when `None`).
    pub state: Option<ClientState>,
    /// Only clients after this one in the listing order.
    pub after: Option<&'a ClientCursor>,
    /// At most this many.
    pub limit: u32,
}

/// Reads for the lifecycle operations. Each answers from one consistent snapshot.
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// One page of clients: see [`ClientListing`]. Ordered by organisation, registration time,
    /// then fingerprint (bytes), as [`super::IdentityStore::list_clients`].
    async fn list_clients_page(&self, q: ClientListing<'_>) -> StoreResult<Vec<ClientRecord>>;
    /// The organisation's registration tokens that were never used (expired ones included),
    /// by creation time then hash. Empty when there are none or the organisation does not
    /// exist.
    async fn list_unused_tokens(&self, org: &OrgName) -> StoreResult<Vec<RegistrationTokenRecord>>;
    /// What the organisation still holds; `None` when it does not exist.
    async fn org_dependents(&self, org: &OrgName) -> StoreResult<Option<OrgDependents>>;
    /// What depends on the client; `None` when it does not exist.
    async fn client_dependents(
        &self,
        fp: &ClientFingerprint,
    ) -> StoreResult<Option<ClientDependents>>;
    /// What depends on the group; `None` when it does not exist.
    async fn group_dependents(
        &self,
        org: &OrgName,
        name: &GroupName,
    ) -> StoreResult<Option<GroupDependents>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_names_a_sample_and_the_rest() {
        let c = Counted {
            count: 7,
            sample: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            c.describe("deposit", "deposits"),
            "7 deposits (a, b, and 5 more)"
        );
        let one = Counted {
            count: 1,
            sample: vec!["a".into()],
        };
        assert_eq!(one.describe("deposit", "deposits"), "1 deposit (a)");
        let bare = Counted {
            count: 2,
            sample: vec![],
        };
        assert_eq!(bare.describe("client", "clients"), "2 clients");
    }

    #[test]
    fn nothing_blocks_an_empty_record() {
        assert!(OrgDependents::default().blockers().is_empty());
        assert!(ClientDependents::default().blockers().is_empty());
        assert!(GroupDependents::default().blockers().is_empty());
        let c = ClientDependents {
            memberships: vec![GroupRef {
                org: OrgName::parse("acme").unwrap(),
                name: GroupName::parse("ops").unwrap(),
            }],
            grants: Counted {
                count: 3,
                sample: vec![],
            },
            ..Default::default()
        };
        // What goes with a client never blocks it.
        assert!(c.blockers().is_empty());
    }
}
