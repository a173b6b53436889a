//! Which authenticated access rows each mutation touches (ADR 0013), in one place for both
//! backends: each backend's writer verifies the old MAC of every existing row a mutation is
//! about to change (so a write never launders an edit made behind its back), applies the
//! mutation, then stores a fresh MAC for every row it changed.

use keysafe_core::store::{Applied, DepositKey, Mutation};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName, Timestamp};

/// The client rows a mutation touches.
#[derive(Debug)]
pub(crate) enum ClientRows<'a> {
    None,
    /// One row; `verify`: its old MAC must hold first (false for a new row, and for the
    /// offline recovery of an administrator, which the seal's holder runs to repair the row).
    One {
        fingerprint: &'a ClientFingerprint,
        verify: bool,
    },
    /// The candidates of `DisableUnactivated`: verified before, and those it disabled
    /// (`Applied::Clients`) re-authenticated after.
    UnactivatedBefore(Timestamp),
}

pub(crate) fn client_rows(m: &Mutation) -> ClientRows<'_> {
    match m {
        Mutation::InsertClient { client, .. } => ClientRows::One {
            fingerprint: &client.fingerprint,
            verify: false,
        },
        Mutation::RecoverAdmin { fingerprint, .. } => ClientRows::One {
            fingerprint,
            verify: false,
        },
        Mutation::MarkSuspectedClone { fingerprint, .. }
        | Mutation::ResetToken { fingerprint, .. }
        | Mutation::SetClientState { fingerprint, .. }
        | Mutation::SetClientRole { fingerprint, .. } => ClientRows::One {
            fingerprint,
            verify: true,
        },
        Mutation::DisableUnactivated {
            registered_before, ..
        } => ClientRows::UnactivatedBefore(*registered_before),
        _ => ClientRows::None,
    }
}

/// The client rows to re-authenticate after a mutation applied.
pub(crate) fn changed_clients<'a>(
    rows: &ClientRows<'a>,
    applied: &'a Applied,
) -> Vec<&'a ClientFingerprint> {
    match rows {
        ClientRows::None => Vec::new(),
        ClientRows::One { fingerprint, .. } => vec![*fingerprint],
        ClientRows::UnactivatedBefore(_) => match applied {
            Applied::Clients(fps) => fps.iter().collect(),
            _ => Vec::new(),
        },
    }
}

/// The deposit headers a mutation touches: each is verified before (when it exists) and gets a
/// fresh MAC after (when it still exists).
#[derive(Debug)]
pub(crate) enum DepositRows<'a> {
    None,
    One(&'a DepositKey),
    /// Every deposit that grants to this client: deleting the client removes those grants and
    /// bumps each one's ACL serial.
    GranteeOf(&'a ClientFingerprint),
}

pub(crate) fn deposit_rows(m: &Mutation) -> DepositRows<'_> {
    match m {
        Mutation::PutVersion { key, .. }
        | Mutation::SetDeleted { key, .. }
        | Mutation::SetAcl { key, .. } => DepositRows::One(key),
        Mutation::DeleteClient { fingerprint, .. } => DepositRows::GranteeOf(fingerprint),
        _ => DepositRows::None,
    }
}

/// The deposit whose grants a mutation replaces (each new grant gets a MAC after).
pub(crate) fn grants_rewritten(m: &Mutation) -> Option<&DepositKey> {
    match m {
        Mutation::SetAcl { key, .. } => Some(key),
        _ => None,
    }
}

/// Whether a mutation changes any authenticated row (refused while sealed).
pub(crate) fn touches_access_rows(m: &Mutation) -> bool {
    !matches!(client_rows(m), ClientRows::None)
        || !matches!(deposit_rows(m), DepositRows::None)
        || !matches!(group_rows(m), GroupRows::None)
}

/// The group rows (memberships, epochs) a mutation writes: each gets a MAC after. Group
/// mutations only add such rows or delete them, so none is verified before (a forged row a
/// mutation deletes grants nothing, and one it keeps stays refused on read).
#[derive(Debug)]
pub(crate) enum GroupRows<'a> {
    None,
    /// Every membership and epoch of a new group.
    Created(&'a OrgName, &'a GroupName),
    Member(&'a OrgName, &'a GroupName, &'a ClientFingerprint),
    Epoch(&'a OrgName, &'a GroupName, u64),
}

pub(crate) fn group_rows(m: &Mutation) -> GroupRows<'_> {
    match m {
        Mutation::CreateGroup { org, name, .. } => GroupRows::Created(org, name),
        Mutation::AddGroupMember {
            org, name, member, ..
        } => GroupRows::Member(org, name, member),
        Mutation::RemoveGroupMember {
            org,
            name,
            expected_epoch,
            ..
        } => GroupRows::Epoch(org, name, expected_epoch.saturating_add(1)),
        _ => GroupRows::None,
    }
}
