//! The conformance suite: every mutation's success and failure contract, every read, listing
//! and pagination (reads fresh after every change, from any handle), the audit chain, the
//! keyring, deletions and their refusals, and the compare-and-set changes raced from two
//! handles on one database (two nodes, or two processes). Written once against
//! `keysafe_core::store` through the factory; `conformance!(module, Backend)` runs every case
//! against one [`TestBackend`].

mod audit;
mod coherence;
mod deposits;
mod export;
mod groups;
mod identities;
mod integrity;
mod keyring;
mod lifecycle;
mod races;
mod sharing;

pub use audit::*;
pub use coherence::*;
pub use deposits::*;
pub use export::*;
pub use groups::*;
pub use identities::*;
pub use integrity::*;
pub use keyring::*;
pub use lifecycle::*;
pub use races::*;
pub use sharing::*;

use keysafe_core::store::{
    Applied, ClientRecord, DepositKey, KekRecord, Mutation, OrgRecord, Store, StoreError,
    TokenDerivation, TokenState, VersionMeta, VersionRecord,
};
use keysafe_proto::api::{AuthMode, ClientRole, ClientState, Encoding};
use keysafe_proto::{
    ClientFingerprint, DepositName, DepositVersion, OrgName, Principal, Timestamp,
};
use keysafe_store::StorageConfig;
use keysafe_store::testing::RawDb;
use std::sync::Arc;

/// A backend under test.
#[async_trait::async_trait]
pub trait TestBackend: Sync {
    /// The configuration of a new, empty store of this backend, and whatever must live as long
    /// as it does (a temporary directory, a throwaway database).
    async fn fresh_config(&self) -> (StorageConfig, Box<dyn std::any::Any + Send>);
    /// Makes every later insert of an audit entry whose target is `target` fail, behind the
    /// store's back (a trigger), to test that failures leave nothing behind.
    async fn refuse_audit_target(&self, raw: &mut RawDb, target: &str);
}

/// Instantiates every case of the suite for one backend.
macro_rules! conformance {
    ($module:ident, $backend:expr) => {
        mod $module {
            conformance!(@cases $backend;
                // opening and creating
                create_and_open_guard_existence,
                // identities
                orgs_are_unique_and_take_auth_changes,
                clients_are_unique_and_need_their_organisation,
                registration_tokens_register_exactly_one_client,
                client_state_role_clone_marks_and_resets,
                token_rotation_is_compare_and_set,
                token_confirmation_and_derivation_are_stored_whole,
                concurrent_rotations_from_two_handles_have_one_winner,
                disable_unactivated_touches_only_unused_clients,
                // authenticated access rows
                writes_keep_client_macs_and_refuse_edited_rows,
                a_sealed_store_refuses_changes_of_authenticated_rows,
                the_backfill_runs_once_and_refuses_a_removed_record,
                writes_keep_deposit_and_grant_macs_and_refuse_edited_rows,
                writes_keep_group_macs_and_edits_do_not_verify,
                // deposits
                put_is_compare_and_set,
                queued_writes_apply_in_order,
                put_needs_an_existing_keyring_version,
                deleted_deposits_refuse_versions_and_purge_removes_everything,
                reads_of_versions_and_missing_deposits,
                listing_respects_prefix_boundaries_order_and_pages,
                listing_orders_by_bytes_not_by_locale,
                many_concurrent_writes_commit_and_survive_reopening,
                corrupt_rows_are_reported_not_decoded,
                the_current_version_is_read_fresh_after_every_change,
                // sharing
                acl_swap_replaces_grants_and_versions_together,
                acl_swap_refusals,
                shared_listing_finds_grants_to_any_grantee,
                // groups
                groups_are_created_with_members_and_keys,
                group_members_are_added_and_admitted,
                removing_a_member_opens_the_next_epoch,
                // keyring
                keyring_rows_are_unique_per_seal_and_version,
                rewrap_is_compare_and_set,
                stale_rows_page_and_usage_counts,
                retire_refuses_used_current_and_unknown_versions,
                keep_only_seal_never_loses_a_version,
                // races between two handles
                concurrent_puts_with_the_same_expectation_have_one_winner,
                concurrent_registrations_acl_swaps_and_member_removals_have_one_winner,
                // audit
                audit_appends_chain_and_verify,
                two_handles_append_to_one_chain_without_failures,
                audit_entries_commit_with_their_writes_and_failures_leave_no_hole,
                audit_append_failure_hands_the_entries_back,
                audit_signing_key_and_checkpoints,
                audit_prune_contract,
                ping_and_stats,
                // end of life
                deleting_an_organisation_needs_it_empty,
                deleting_a_client_removes_its_grants_memberships_and_keys,
                deleting_a_client_is_refused_while_something_depends_on_it,
                deleting_a_group_needs_no_deposits_and_no_grants,
                unused_registration_tokens_are_listed_and_revoked,
                recovering_an_administrator_restores_any_client,
                clients_page_through_in_listing_order,
                // export and import
                export_then_import_keeps_every_record,
                import_refuses_a_store_that_holds_anything,
                a_failed_import_leaves_the_store_empty,
                an_export_is_one_snapshot_while_writes_go_on,
                every_table_is_an_exported_kind,
            );
        }
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::suite::$case(&$backend).await
            }
        )*
    };
}

/// A fresh store and what keeps it alive.
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub config: StorageConfig,
    _guard: Box<dyn std::any::Any + Send>,
}

impl Ctx {
    /// An empty store.
    pub async fn empty(b: &dyn TestBackend) -> Self {
        let (config, guard) = b.fresh_config().await;
        let store = keysafe_store::create(&config).await.unwrap();
        Self {
            store,
            config,
            _guard: guard,
        }
    }

    /// A store with organisation `acme`, active clients `a` and `b`, and keyring version 1.
    pub async fn new(b: &dyn TestBackend) -> Self {
        let c = Self::empty(b).await;
        c.store.apply(create_org("acme")).await.unwrap();
        for f in ['a', 'b'] {
            c.store
                .apply(insert(client_record(fp(f), "acme", ts(1))))
                .await
                .unwrap();
        }
        c.store.apply(kek(1, "test-fixture")).await.unwrap();
        c
    }

    /// Another handle on the same database, as a second node (or process) opens it.
    pub async fn open_again(&self) -> Arc<dyn Store> {
        keysafe_store::open(&self.config).await.unwrap()
    }

    /// The same store opened again (after the current handle is dropped).
    pub async fn reopen(&mut self) {
        self.store.close().await;
        self.store = keysafe_store::open(&self.config).await.unwrap();
    }

    pub async fn raw(&self) -> RawDb {
        RawDb::connect(&self.config).await.unwrap()
    }

    pub async fn put(
        &self,
        k: &DepositKey,
        expected: Option<u64>,
        n: u64,
        payload: &[u8],
    ) -> Result<Applied, StoreError> {
        self.store
            .apply(Mutation::PutVersion {
                org: org(),
                key: k.clone(),
                expected_current: expected.map(ver),
                expected_acl_serial: None,
                version: version(n, payload),
            })
            .await
    }
}

// ---- fixtures ----

pub fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

pub fn fp(c: char) -> ClientFingerprint {
    ClientFingerprint::parse(&c.to_string().repeat(64)).unwrap()
}

pub fn ver(n: u64) -> DepositVersion {
    DepositVersion::new(n).unwrap()
}

pub fn org() -> OrgName {
    OrgName::parse("acme").unwrap()
}

pub fn create_org(name: &str) -> Mutation {
    Mutation::CreateOrg(OrgRecord {
        name: OrgName::parse(name).unwrap(),
        contacts: vec!["ops@example.com".into()],
        auth_mode: AuthMode::Secret,
        auth_hash: Some("$argon2id$x".into()),
        created_at: ts(1),
        updated_at: ts(1),
    })
}

pub fn client_record(fingerprint: ClientFingerprint, org: &str, now: Timestamp) -> ClientRecord {
    ClientRecord {
        fingerprint,
        org: OrgName::parse(org).unwrap(),
        name: None,
        state: ClientState::Active,
        role: ClientRole::Client,
        cert_der: vec![1, 2, 3],
        recipient: None,
        token: TokenState {
            counter: 0,
            hash: None,
            recent: vec![],
            rotated_at: now,
            confirmed: false,
            derivation: None,
        },
        last_seen_at: None,
        state_reason: None,
        created_at: now,
        updated_at: now,
        mac: None,
    }
}

pub fn insert(client: ClientRecord) -> Mutation {
    Mutation::InsertClient {
        client,
        consume_token: None,
    }
}

pub fn key(owner: char, name: &str) -> DepositKey {
    DepositKey {
        owner: Principal::Client(fp(owner)),
        name: DepositName::parse(name).unwrap(),
    }
}

pub fn version(n: u64, payload: &[u8]) -> VersionRecord {
    VersionRecord {
        meta: VersionMeta {
            version: ver(n),
            size: payload.len() as u64,
            created_at: ts(1_000 + n as i64),
            creator: fp('a'),
            encoding: Encoding::Raw,
        },
        kek_version: 1,
        wrapped_dek: vec![9; 60],
        ciphertext: payload.to_vec(),
    }
}

pub fn kek(v: u32, seal: &str) -> Mutation {
    Mutation::InsertKek(KekRecord {
        version: v,
        seal: seal.into(),
        wrapped: vec![v as u8],
        created_at: ts(5),
    })
}

/// Awaits spawned tasks in order.
pub async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
