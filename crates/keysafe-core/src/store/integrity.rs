//! Authenticated access rows (ADR 0013): the rows that decide who may do what carry a MAC over
//! their logical identity and every field that decides access. The store keeps the MAC current
//! on every write through the [`RowAuthenticator`] the service installs once it holds the open
//! seal, and verifies a row's old MAC before it changes the row (so a write never launders an
//! edit made behind its back); the service verifies the MAC wherever it reads a row to decide.
//!
//! What a MAC covers is defined here, once, as [`AccessRow::encode`]: a domain label per kind,
//! then each field length-prefixed. Only logical identities (fingerprints, names) are covered,
//! never rowids, so a backup restored into the other backend still verifies.

use crate::crypto::AadBuilder;
use keysafe_proto::api::{Access, ClientRole, ClientState};
use keysafe_proto::{ClientFingerprint, DepositName, GroupName, OrgName, Principal, Timestamp};
use std::sync::{Arc, RwLock};

/// One authenticated row's logical identity and access-deciding fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessRow {
    /// A client: who it is, where, and what it may do (state, role) and which recipient honest
    /// clients encrypt to for it.
    Client {
        fingerprint: ClientFingerprint,
        org: OrgName,
        state: ClientState,
        role: ClientRole,
        recipient: Option<String>,
    },
    /// A deposit's header: which version is current, its ACL serial (every ACL change bumps
    /// it), whether it is soft-deleted, and its organisation.
    DepositHead {
        owner: Principal,
        name: DepositName,
        org: OrgName,
        current_version: u64,
        acl_serial: u64,
        deleted: bool,
    },
    /// A grant on a deposit.
    Grant {
        owner: Principal,
        name: DepositName,
        grantee: Principal,
        access: Access,
    },
    /// A client's membership of a group.
    GroupMember {
        org: OrgName,
        name: GroupName,
        member: ClientFingerprint,
    },
    /// One epoch of a group and the recipient honest clients encrypt to for it.
    GroupEpoch {
        org: OrgName,
        name: GroupName,
        epoch: u64,
        recipient: String,
    },
    /// The record that the back-fill of rows written before MACs existed has completed: from
    /// then on a row without a MAC is refused.
    BackfillCompleted { at: Timestamp },
}

/// The canonical bytes of a deposit header's access fields (see [`AccessRow::encode`]).
fn encode_deposit_head(
    owner: &Principal,
    name: &DepositName,
    org: &OrgName,
    current_version: u64,
    acl_serial: u64,
    deleted: bool,
) -> Vec<u8> {
    AadBuilder::new("keysafe/row/deposit/v1")
        .field(owner.stored_str().as_bytes())
        .field(name.as_str().as_bytes())
        .field(org.as_str().as_bytes())
        .number(current_version)
        .number(acl_serial)
        .number(u64::from(deleted))
        .finish()
}

impl AccessRow {
    /// The access fields of a client record.
    pub fn client(rec: &super::ClientRecord) -> Self {
        AccessRow::Client {
            fingerprint: rec.fingerprint.clone(),
            org: rec.org.clone(),
            state: rec.state,
            role: rec.role,
            recipient: rec.recipient.clone(),
        }
    }

    /// The access fields of a deposit header.
    pub fn deposit(rec: &super::DepositRecord) -> Self {
        AccessRow::DepositHead {
            owner: rec.owner.clone(),
            name: rec.name.clone(),
            org: rec.org.clone(),
            current_version: rec.current_version.get(),
            acl_serial: rec.acl_serial,
            deleted: rec.deleted,
        }
    }

    /// What `AccessRow::deposit(rec).encode()` returns, without copying the record's names:
    /// every read of a deposit checks its header's MAC.
    pub fn deposit_encoding(rec: &super::DepositRecord) -> Vec<u8> {
        encode_deposit_head(
            &rec.owner,
            &rec.name,
            &rec.org,
            rec.current_version.get(),
            rec.acl_serial,
            rec.deleted,
        )
    }

    /// The access fields of a grant on the deposit `key`.
    pub fn grant(key: &super::DepositKey, g: &super::GrantRecord) -> Self {
        AccessRow::Grant {
            owner: key.owner.clone(),
            name: key.name.clone(),
            grantee: g.grantee.clone(),
            access: g.access,
        }
    }

    /// The canonical bytes the MAC is computed over.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            AccessRow::Client {
                fingerprint,
                org,
                state,
                role,
                recipient,
            } => AadBuilder::new("keysafe/row/client/v1")
                .field(fingerprint.as_str().as_bytes())
                .field(org.as_str().as_bytes())
                .field(state.as_str().as_bytes())
                .field(role.as_str().as_bytes())
                .field(optional(recipient.as_deref()).as_slice())
                .finish(),
            AccessRow::DepositHead {
                owner,
                name,
                org,
                current_version,
                acl_serial,
                deleted,
            } => encode_deposit_head(owner, name, org, *current_version, *acl_serial, *deleted),
            AccessRow::Grant {
                owner,
                name,
                grantee,
                access,
            } => AadBuilder::new("keysafe/row/grant/v1")
                .field(owner.stored().as_bytes())
                .field(name.as_str().as_bytes())
                .field(grantee.stored().as_bytes())
                .field(access.as_str().as_bytes())
                .finish(),
            AccessRow::GroupMember { org, name, member } => {
                AadBuilder::new("keysafe/row/group-member/v1")
                    .field(org.as_str().as_bytes())
                    .field(name.as_str().as_bytes())
                    .field(member.as_str().as_bytes())
                    .finish()
            }
            AccessRow::GroupEpoch {
                org,
                name,
                epoch,
                recipient,
            } => AadBuilder::new("keysafe/row/group-epoch/v1")
                .field(org.as_str().as_bytes())
                .field(name.as_str().as_bytes())
                .number(*epoch)
                .field(recipient.as_bytes())
                .finish(),
            AccessRow::BackfillCompleted { at } => AadBuilder::new("keysafe/row/backfill/v1")
                .number(at.unix_millis() as u64)
                .finish(),
        }
    }

    /// The kind and logical key, for reports and logs (no secret, no MAC).
    pub fn describe(&self) -> AccessRowRef {
        match self {
            AccessRow::Client { fingerprint, .. } => AccessRowRef {
                kind: AccessRowKind::Client,
                key: fingerprint.as_str().to_owned(),
            },
            AccessRow::DepositHead { owner, name, .. } => AccessRowRef {
                kind: AccessRowKind::Deposit,
                key: format!("{}/{}", owner.stored(), name),
            },
            AccessRow::Grant {
                owner,
                name,
                grantee,
                ..
            } => AccessRowRef {
                kind: AccessRowKind::Grant,
                key: format!("{}/{} -> {}", owner.stored(), name, grantee.stored()),
            },
            AccessRow::GroupMember { org, name, member } => AccessRowRef {
                kind: AccessRowKind::GroupMember,
                key: format!("{org}/{name} {member}"),
            },
            AccessRow::GroupEpoch {
                org, name, epoch, ..
            } => AccessRowRef {
                kind: AccessRowKind::GroupEpoch,
                key: format!("{org}/{name} epoch {epoch}"),
            },
            AccessRow::BackfillCompleted { .. } => AccessRowRef {
                kind: AccessRowKind::BackfillMarker,
                key: "row_macs_backfill".into(),
            },
        }
    }
}

/// An absent value and an empty one must not encode alike: a tag byte, then the bytes.
fn optional(v: Option<&str>) -> Vec<u8> {
    match v {
        None => vec![0],
        Some(s) => {
            let mut b = Vec::with_capacity(s.len() + 1);
            b.push(1);
            b.extend_from_slice(s.as_bytes());
            b
        }
    }
}

/// The kinds of authenticated rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessRowKind {
    Client,
    Deposit,
    Grant,
    GroupMember,
    GroupEpoch,
    BackfillMarker,
}

impl AccessRowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessRowKind::Client => "client",
            AccessRowKind::Deposit => "deposit",
            AccessRowKind::Grant => "grant",
            AccessRowKind::GroupMember => "group-member",
            AccessRowKind::GroupEpoch => "group-epoch",
            AccessRowKind::BackfillMarker => "backfill-marker",
        }
    }
}

/// Which row: its kind and logical key (a fingerprint; `owner/name` for a deposit, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AccessRowRef {
    pub kind: AccessRowKind,
    pub key: String,
}

impl std::fmt::Display for AccessRowRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.key)
    }
}

/// Computes and checks row MACs. Implemented by the service's key (`integrity::RowMacKey`);
/// the store only calls it.
pub trait RowAuthenticator: Send + Sync {
    fn mac(&self, row: &AccessRow) -> Vec<u8>;
    /// True when `mac` is this row's MAC (compared in constant time).
    fn verify(&self, row: &AccessRow, mac: &[u8]) -> bool {
        self.verify_encoded(&row.encode(), mac)
    }
    /// True when `mac` is the MAC of a row whose [`AccessRow::encode`] is `encoded`.
    fn verify_encoded(&self, encoded: &[u8], mac: &[u8]) -> bool;
}

/// What a store does about row MACs on its writes.
#[derive(Clone, Default)]
pub enum RowAuthMode {
    /// MACs are not kept: rows a write touches are left without one (NULL). A store nobody
    /// installed a key in (the conformance suite, raw tools); an unsealed service refuses such
    /// rows, so a write without the key can lock a row, never grant anything.
    #[default]
    Off,
    /// The service is sealed: a write that would change an authenticated row is refused with
    /// `Sealed` (it could not be authenticated).
    Sealed,
    /// MACs are verified before and written after every change of an authenticated row.
    On(Arc<dyn RowAuthenticator>),
}

impl RowAuthMode {
    pub fn authenticator(&self) -> Option<&Arc<dyn RowAuthenticator>> {
        match self {
            RowAuthMode::On(a) => Some(a),
            _ => None,
        }
    }
}

/// Where the service puts its authenticator once it holds the open seal (see [`RowAuthMode`]);
/// a store reads it for each write batch. Cloning shares the slot.
#[derive(Clone, Default)]
pub struct RowAuthSlot(Arc<RwLock<RowAuthMode>>);

impl std::fmt::Debug for RowAuthSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.get() {
            RowAuthMode::Off => "off",
            RowAuthMode::Sealed => "sealed",
            RowAuthMode::On(_) => "on",
        };
        f.debug_struct("RowAuthSlot").field("mode", &mode).finish()
    }
}

impl RowAuthSlot {
    pub fn get(&self) -> RowAuthMode {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set(&self, mode: RowAuthMode) {
        match self.0.write() {
            Ok(mut g) => *g = mode,
            Err(p) => *p.into_inner() = mode,
        }
    }

    /// The installed authenticator, if MACs are on.
    pub fn authenticator(&self) -> Option<Arc<dyn RowAuthenticator>> {
        self.get().authenticator().cloned()
    }
}

/// The MAC a row gets on a write: none when MACs are off.
pub fn mac_of(mode: &RowAuthMode, row: &AccessRow) -> Option<Vec<u8>> {
    mode.authenticator().map(|a| a.mac(row))
}

/// Checks a row's stored MAC before a write changes it: `Err` names the row when the MAC is
/// missing or wrong, and is `Sealed` while the service is sealed. Nothing is checked when MACs
/// are off.
pub fn check_before_write(
    mode: &RowAuthMode,
    row: &AccessRow,
    mac: Option<&[u8]>,
) -> Result<(), super::StoreError> {
    match mode {
        RowAuthMode::Off => Ok(()),
        RowAuthMode::Sealed => Err(super::StoreError::Sealed),
        RowAuthMode::On(auth) => match mac {
            Some(m) if auth.verify(row, m) => Ok(()),
            _ => Err(super::StoreError::Corrupt(format!(
                "{} fails its integrity check; the write is refused",
                row.describe()
            ))),
        },
    }
}
