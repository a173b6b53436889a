//! Every change a store can make, each with its contract: what success leaves behind and which
//! [`StoreError`](super::StoreError) each failure is. Every backend implements exactly these
//! contracts, and the conformance suite (`keysafe-store/tests/it/suite`) pins each line of them.
//!
//! Common to all: a change is atomic on its own (it happens entirely or not at all); a failed
//! change leaves nothing behind, also when it was committed in one transaction with others
//! (group commit); `Unavailable` (the database cannot be reached), `ReadOnly` (it answers but
//! refuses writes: a standby) and `Backend` (anything else the database reports) can answer any
//! of them and mean the change did not happen. "NotFound" always means a row the change names does not exist (the
//! organisation of a new client, the client of a group member, ...).

use super::cluster::{Change, ClusterIdentityRecord, NodeRecord};
use super::records::{
    AuditKeyRecord, ClientRecord, DepositKey, GrantRecord, KekRecord, OrgRecord,
    RegistrationTokenRecord, TokenState, VersionRecord, WrappedId, WrappedKeyRecord,
};
use keysafe_proto::api::{AuthMode, ClientRole, ClientState};
use keysafe_proto::audit::AuditCheckpoint;
use keysafe_proto::{ClientFingerprint, DepositVersion, GroupName, OrgName, Timestamp};

/// One change. Grouped below by the aggregate it changes; one enum (not one per role) because a
/// backend commits whatever is queued, of any aggregate, in one transaction, in order.
#[derive(Debug, Clone)]
pub enum Mutation {
    // ---- organisations, clients, registration tokens ----
    /// Stores a new organisation. `AlreadyExists`: the name is taken.
    CreateOrg(OrgRecord),
    /// Sets an organisation's auth mode and secret hash, and `updated_at = at`.
    /// `NotFound`: no such organisation.
    SetOrgAuth {
        name: OrgName,
        mode: AuthMode,
        auth_hash: Option<String>,
        at: Timestamp,
    },
    /// Stores a new client. `AlreadyExists`: the fingerprint is registered (then a token named
    /// by `consume_token` stays unused). `NotFound`: its organisation does not exist.
    /// With `consume_token` (the hash of a one-time registration token), the token is checked
    /// first: it must exist, be unused, expire after the client's `created_at` and belong to
    /// the client's organisation, else `NotFound`; it is marked used (at `created_at`, by this
    /// client) in the same transaction.
    InsertClient {
        client: ClientRecord,
        consume_token: Option<String>,
    },
    /// Stores a one-time registration token. `AlreadyExists`: the hash is stored already.
    /// `NotFound`: its organisation does not exist.
    InsertRegistrationToken(RegistrationTokenRecord),
    /// Replaces an active client's token state with `token`, every field of it (counter,
    /// hash, replaced tokens, issue time, `confirmed`, `derivation`: a rotation, a fresh token
    /// after a reset, or the same token marked confirmed) and records `at` as last seen, if its
    /// counter is still `expected_counter`.
    /// `Conflict`: the counter moved (another request rotated first) or the client is not
    /// active. `NotFound`: no such client. Of many concurrent rotations from one counter
    /// exactly one succeeds.
    RotateToken {
        fingerprint: ClientFingerprint,
        expected_counter: u64,
        token: TokenState,
        at: Timestamp,
    },
    /// Sets a client's state to `suspected-clone` with `reason`, and `updated_at = at`,
    /// whatever its state was. `NotFound`: no such client.
    MarkSuspectedClone {
        fingerprint: ClientFingerprint,
        reason: String,
        at: Timestamp,
    },
    /// Clears a client's token hash and replaced tokens, sets `confirmed` false and
    /// `derivation` none (the next request is issued a fresh token; the counter is kept) and
    /// sets `updated_at = at`. A `suspected-clone` client
    /// becomes `active` and loses its state reason; any other state (and its reason) is kept.
    /// `NotFound`: no such client.
    ResetToken {
        fingerprint: ClientFingerprint,
        at: Timestamp,
    },
    /// Sets a client's state and `updated_at = at` (the state reason is kept).
    /// `NotFound`: no such client.
    SetClientState {
        fingerprint: ClientFingerprint,
        state: ClientState,
        at: Timestamp,
    },
    /// Sets a client's role and `updated_at = at`. `NotFound`: no such client.
    SetClientRole {
        fingerprint: ClientFingerprint,
        role: ClientRole,
        at: Timestamp,
    },
    /// Disables every client of role `client`, `pending` or `active`, registered strictly
    /// before `registered_before`, that never made an authenticated request (no last seen),
    /// with the reason "never used its registration". Never fails for want of matches:
    /// answers `Applied::Clients` with the clients it disabled (possibly none), ordered by
    /// fingerprint.
    DisableUnactivated {
        registered_before: Timestamp,
        at: Timestamp,
    },

    // ---- deposits and their ACLs ----
    /// Adds a version and makes it current. `expected_current` is the current version the
    /// writer saw (`None`: the deposit did not exist); anything else is
    /// `VersionConflict { current }` carrying what is current. With `expected_acl_serial`, an
    /// existing deposit's ACL serial must still be that, else `VersionConflict` too. A
    /// soft-deleted deposit is `Deleted` (checked first). The version's number is the caller's
    /// (the service uses current + 1); a number already stored is `AlreadyExists`. Its data
    /// key must name a keyring version that exists, else `Unavailable` (the version was retired
    /// after the writer read the keyring: retrying with the current keyring succeeds).
    PutVersion {
        org: OrgName,
        key: DepositKey,
        expected_current: Option<DepositVersion>,
        expected_acl_serial: Option<u64>,
        version: VersionRecord,
    },
    /// Soft-deletes (`deleted`) or restores a deposit and sets `updated_at = at`; setting the
    /// state it already has succeeds. `NotFound`: no such deposit.
    SetDeleted {
        key: DepositKey,
        deleted: bool,
        at: Timestamp,
    },
    /// Destroys a deposit, every version and every grant; answers `Applied::Purged(versions)`.
    /// `NotFound`: no such deposit.
    Purge { key: DepositKey },
    /// Replaces a deposit's grants by `grants` (distinct grantees; a repeated one is
    /// `AlreadyExists`) and the sealed payload, size, encoding and data key of each version in
    /// `replace` (the current one's size becomes the deposit's), bumps the ACL serial by one and
    /// sets `updated_at = at`, if the current version and ACL serial are still the expected
    /// ones. `NotFound`: no such deposit, or a version in `replace` does not exist. `Deleted`:
    /// the deposit is soft-deleted. `Conflict`: the current version or the ACL serial moved.
    /// A replaced version's data key must name an existing keyring version, else `Unavailable`
    /// (as for `PutVersion`).
    SetAcl {
        key: DepositKey,
        expected_current: DepositVersion,
        expected_acl_serial: u64,
        grants: Vec<GrantRecord>,
        replace: Vec<VersionRecord>,
        at: Timestamp,
    },

    // ---- groups ----
    /// Creates a group at epoch 1 with `recipient` as that epoch's recipient; every key's
    /// member becomes a member (`keys` holds one epoch-1 identity per initial member).
    /// `AlreadyExists`: the name is taken in the organisation (or a member is repeated).
    /// `NotFound`: the organisation or a member client does not exist, or a key names an epoch
    /// other than 1.
    CreateGroup {
        org: OrgName,
        name: GroupName,
        recipient: String,
        keys: Vec<WrappedKeyRecord>,
        at: Timestamp,
    },
    /// Adds a member without keys (a current member admits it) and sets the group's
    /// `updated_at = at`. `NotFound`: no such group, or no such client. `AlreadyExists`: it is
    /// a member already.
    AddGroupMember {
        org: OrgName,
        name: GroupName,
        member: ClientFingerprint,
        at: Timestamp,
    },
    /// Stores identities wrapped for members (an identity already stored for that member and
    /// epoch is kept, not replaced) and sets the group's `updated_at = at`. `NotFound`: no such
    /// group, a key's member is not a member of it, or a key's epoch does not exist.
    AdmitGroupMember {
        org: OrgName,
        name: GroupName,
        keys: Vec<WrappedKeyRecord>,
        at: Timestamp,
    },
    /// Removes a member and every identity wrapped for it, and opens epoch
    /// `expected_epoch + 1` with `recipient` and `keys` (the new identity wrapped for the
    /// remaining members), setting `updated_at = at`. `Conflict`: the epoch is no longer
    /// `expected_epoch` (checked before membership). `NotFound`: no such group, the member is
    /// not in it, or a key's member is not a remaining member.
    RemoveGroupMember {
        org: OrgName,
        name: GroupName,
        member: ClientFingerprint,
        expected_epoch: u64,
        recipient: String,
        keys: Vec<WrappedKeyRecord>,
        at: Timestamp,
    },

    // ---- keyring and re-wrap ----
    /// Stores a keyring version wrapped by one seal. `AlreadyExists`: that version is stored
    /// under that seal already (the same version under another seal is a separate row).
    InsertKek(KekRecord),
    /// Replaces one wrapped secret (re-wrap after a rotation), only if it is still wrapped by
    /// `expected_kek`. `NotFound`: the row no longer exists (purged meanwhile), or `kek_version`
    /// names no keyring version. `VersionConflict { current: None }`: the row exists but is no
    /// longer wrapped by `expected_kek` (another re-wrap or a rewrite came first).
    Rewrap {
        id: WrappedId,
        expected_kek: u32,
        kek_version: u32,
        wrapped: Vec<u8>,
    },
    /// Deletes a keyring version under every seal. `InUse`: a wrapped row still uses it, or it
    /// is the newest (current) version. `NotFound`: no keyring row has that version.
    RetireKek { version: u32 },
    /// Deletes every keyring row wrapped by a seal other than `keep` (the end of a seal
    /// migration). `NotFound`: no row of `keep` exists (so the keyring is never emptied).
    /// `InUse`: some version has no row under `keep` (deleting would lose it).
    KeepOnlySeal { keep: String },

    // ---- audit trail ----
    /// Stores the audit signing key. `AlreadyExists`: one is stored already (whatever its id).
    InsertAuditKey(AuditKeyRecord),
    /// Stores a signed checkpoint of the audit chain. A checkpoint already stored at the same
    /// `seq` is kept and this one dropped, successfully (two nodes may sign the same head).
    InsertAuditCheckpoint(AuditCheckpoint),
    /// Deletes every audit entry with `seq <= through` (retention: they were archived first).
    /// The checkpoint stored at `through` stays, with every other checkpoint: it is the signed
    /// anchor the first retained entry's `prev_hash` must match. `NotFound`: no checkpoint is
    /// stored at `through`. `InUse`: no entry after `through` exists (the head is never pruned).
    PruneAudit { through: u64 },

    // ---- end of life (rules in `lifecycle`) ----
    /// Deletes an organisation with every registration token minted for it (used ones name
    /// clients that no longer exist; unused ones could register nobody). `NotFound`: no such organisation. `InUse` (naming them,
    /// see `OrgDependents::blockers`): it still has clients, groups or deposits.
    DeleteOrg { name: OrgName },
    /// Deletes a client with what only it held, in one transaction: every grant to it as a
    /// grantee (each such deposit's ACL serial goes up by one and its `updated_at = at`), its
    /// group memberships and the identities wrapped for it (each such group's
    /// `updated_at = at`; its epoch is kept). Registration tokens it used, versions it wrote
    /// and grants it made keep naming it. `NotFound`: no such client. `InUse` (naming them,
    /// see `ClientDependents::blockers`): it owns deposits, is the only member of a group
    /// holding the current epoch's identity, or is an administrator and no other active
    /// administrator exists.
    DeleteClient {
        fingerprint: ClientFingerprint,
        at: Timestamp,
    },
    /// Deletes a group with its epochs, members and wrapped identities. `NotFound`: no such
    /// group. `InUse` (naming them, see `GroupDependents::blockers`): it owns deposits or a
    /// deposit grants it access.
    DeleteGroup { org: OrgName, name: GroupName },
    /// Deletes each registration token in `hashes` that belongs to `org` and was never used
    /// (expired or not); answers `Applied::Revoked(n)` with how many it deleted. Tokens that
    /// are unknown, used, or of another organisation are left alone (never an error).
    /// `NotFound`: no such organisation.
    RevokeRegistrationTokens { org: OrgName, hashes: Vec<String> },
    /// Makes a client an active administrator again whatever its state and role (the offline
    /// recovery of a locked administrator): state `active` without a reason, role `admin`,
    /// token cleared as by `ResetToken` (the next request is issued a fresh one; the counter
    /// is kept), `updated_at = at`. `NotFound`: no such client.
    RecoverAdmin {
        fingerprint: ClientFingerprint,
        at: Timestamp,
    },
    // ---- the cluster ----
    /// Stores a node's heartbeat: inserts its row, or replaces every field of it. Never
    /// `NotFound`.
    UpsertNode(NodeRecord),
    /// Deletes a node's row. `NotFound`: no such node.
    RemoveNode { id: keysafe_proto::cluster::NodeId },
    /// Stores the cluster's TLS identity. `AlreadyExists`: one is stored already. Its data key
    /// must name a keyring version that exists, else `Unavailable` (as for `PutVersion`).
    InsertClusterIdentity(ClusterIdentityRecord),
    /// Changes nothing but counts and announces `Change` as every change-bearing mutation does
    /// (see [`Mutation::change`]): for what a node learns outside the database (its seal's key
    /// destroyed).
    Announce(Change),

    // ---- authenticated access rows (ADR 0013) ----
    /// Gives every authenticated row without a MAC one under `auth`, and stores the
    /// back-fill record (completed at `at`, with its MAC), once: when the record exists already
    /// it changes nothing and answers `Applied::Backfilled(0)`. `Conflict`: no record exists but
    /// some row has a MAC (rows were written with MACs and the record was removed since:
    /// refusing keeps a removal from laundering rows stripped of their MAC). Answers
    /// `Applied::Backfilled(n)` with how many rows it authenticated.
    BackfillRowMacs { auth: RowAuth, at: Timestamp },
}

/// The row authenticator a back-fill runs under (its Debug output names nothing).
#[derive(Clone)]
pub struct RowAuth(pub std::sync::Arc<dyn super::RowAuthenticator>);

impl std::fmt::Debug for RowAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowAuth")
    }
}

/// What a successful change reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// A purge removed this many versions.
    Purged(u64),
    /// The clients a bulk change touched.
    Clients(Vec<ClientFingerprint>),
    /// How many registration tokens a revocation deleted.
    Revoked(u64),
    /// How many audit entries a prune deleted.
    Pruned(u64),
    /// How many rows a back-fill authenticated.
    Backfilled(u64),
}
