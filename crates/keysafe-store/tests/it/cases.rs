//! The conformance cases: `Store` semantics written once against `dyn Store` and run on every
//! backend (`conformance_suite!` in `postgres.rs` and `sqlite_cases.rs`). Each mutation's
//! success and failure contract, reads, listing and pagination, audit append and verify,
//! keyring rotate and retire, and the compare-and-set operations under concurrency from two
//! handles on one database (two nodes, or two processes).
//!
//! A backend provides a [`Fixture`]: the store under test, a way to open the same database
//! again, and two ways to tamper with it behind the store's back.

use async_trait::async_trait;
use keysafe_core::store::{
    Applied, AuditKeyRecord, ClientRecord, DepositKey, DepositListing, DepositRecord, GrantRecord,
    KekRecord, KekUsage, Mutation, OrgRecord, RegistrationTokenRecord, Store, StoreError,
    TokenState, VersionMeta, VersionRecord, WrappedId, WrappedKeyRecord, WrappedKind,
};
use keysafe_proto::api::{Access, AuthMode, ClientRole, ClientState, Encoding};
use keysafe_proto::audit::{AuditCheckpoint, AuditEvent};
use keysafe_proto::{
    ClientFingerprint, DepositName, DepositVersion, GroupName, OrgName, Principal, Timestamp,
};
use std::sync::Arc;

#[async_trait(?Send)]
pub trait Fixture: Send + Sync {
    /// The store under test, on a database of its own, already seeded by [`seed`].
    fn store(&self) -> Arc<dyn Store>;
    /// Another handle on the same database, as a second node (or process) opens it.
    async fn open_again(&self) -> Arc<dyn Store>;
    /// Writes, behind the store's back, a deposit of client `a` whose name breaks the naming
    /// rule (`bad/../name`).
    async fn write_bad_deposit_name(&self);
    /// Makes the database refuse audit entries whose target is `target`.
    async fn refuse_audit_target(&self, target: &str);
}

/// Runs the named cases as `#[tokio::test]`s on fixtures made by `$make` (an async fn
/// returning `Box<dyn Fixture>`). `without_pending` leaves out the cases the SQLite store does
/// not pass yet: the decided `Rewrap` contract, and one audit chain across two handles (its
/// writer reads the chain head before taking the write lock).
macro_rules! conformance_suite {
    ($make:path) => {
        conformance_suite!(@cases $make;
            rewrap_answers_not_found_for_missing_rows_and_keyring_versions,
            audit_chain_stays_one_chain_across_two_writers,
        );
        conformance_suite!($make, without_pending);
    };
    ($make:path, without_pending) => {
        conformance_suite!(@cases $make;
            uniqueness_and_references,
            put_is_compare_and_set,
            deleted_deposits_refuse_versions_and_purge_removes_everything,
            listing_is_byte_ordered_with_exact_prefixes_and_pages,
            many_concurrent_writes_commit_and_are_seen_by_another_handle,
            corrupt_rows_are_reported_not_decoded,
            rewrap_is_compare_and_set_and_retire_refuses_used_versions,
            seal_migration_keeps_only_the_new_rows,
            audit_entries_commit_with_their_writes_and_failures_leave_no_hole,
            token_rotation_is_compare_and_set_for_active_clients,
            concurrent_rotations_from_two_handles_exactly_one_wins,
            concurrent_puts_with_the_same_expectation_exactly_one_wins,
            registration_tokens_are_single_use_unexpired_and_per_org,
            disable_unactivated_selects_never_seen_ordinary_clients,
            org_auth_roles_and_client_listing,
            groups_keep_epochs_members_and_wrapped_keys,
            acl_swap_is_compare_and_set_and_replaces_versions,
            audit_key_checkpoints_and_kek_usage_cover_both_kinds,
            stats_count_clients_and_deposits,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let fixture = $make().await;
                crate::cases::$case(&*fixture).await;
            }
        )*
    };
}
pub(crate) use conformance_suite;

// ---- helpers ----

pub fn fp(c: char) -> ClientFingerprint {
    ClientFingerprint::parse(&c.to_string().repeat(64)).unwrap()
}

pub fn ver(n: u64) -> DepositVersion {
    DepositVersion::new(n).unwrap()
}

pub fn org() -> OrgName {
    OrgName::parse("acme").unwrap()
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

pub fn client_record(fingerprint: ClientFingerprint, now: Timestamp) -> ClientRecord {
    ClientRecord {
        fingerprint,
        org: org(),
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
        },
        last_seen_at: None,
        state_reason: None,
        created_at: now,
        updated_at: now,
    }
}

fn insert(client: ClientRecord) -> Mutation {
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

fn version(n: u64, payload: &[u8]) -> VersionRecord {
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

fn kek(v: u32, seal: &str) -> Mutation {
    Mutation::InsertKek(KekRecord {
        version: v,
        seal: seal.into(),
        wrapped: vec![v as u8],
        created_at: ts(5),
    })
}

fn org_record(name: &str, mode: AuthMode) -> OrgRecord {
    OrgRecord {
        name: OrgName::parse(name).unwrap(),
        contacts: vec!["sec@example.com".into()],
        auth_mode: mode,
        auth_hash: (mode == AuthMode::Secret).then(|| "$argon2id$x".into()),
        created_at: ts(1),
        updated_at: ts(1),
    }
}

/// Organisation `acme`, active clients `a` and `b`, keyring version 1.
pub async fn seed(s: &dyn Store) {
    s.apply(Mutation::CreateOrg(org_record("acme", AuthMode::Secret)))
        .await
        .unwrap();
    for c in ['a', 'b'] {
        s.apply(insert(client_record(fp(c), ts(1)))).await.unwrap();
    }
    // Data keys must name an existing keyring version.
    s.apply(kek(1, "test-fixture")).await.unwrap();
}

async fn put(
    s: &dyn Store,
    k: &DepositKey,
    expected: Option<u64>,
    n: u64,
    payload: &[u8],
) -> Result<Applied, StoreError> {
    s.apply(Mutation::PutVersion {
        org: org(),
        key: k.clone(),
        expected_current: expected.map(ver),
        expected_acl_serial: None,
        version: version(n, payload),
    })
    .await
}

fn event(target: &str) -> AuditEvent {
    AuditEvent {
        time: 1,
        node: "n".into(),
        request_id: target.into(),
        remote: "127.0.0.1:1".into(),
        client: None,
        org: None,
        operation: "POST /x".into(),
        target: target.into(),
        version: None,
        outcome: "ok".into(),
    }
}

fn names(rows: Vec<DepositRecord>) -> Vec<String> {
    rows.into_iter().map(|r| r.name.to_string()).collect()
}

// ---- cases ----

pub async fn uniqueness_and_references(f: &dyn Fixture) {
    let s = f.store();
    let now = ts(5);
    assert_eq!(
        s.apply(Mutation::CreateOrg(org_record("acme", AuthMode::Approval)))
            .await
            .unwrap_err(),
        StoreError::AlreadyExists
    );
    let mut c = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(
        s.apply(insert(c.clone())).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    c.fingerprint = fp('c');
    c.org = OrgName::parse("nowhere").unwrap();
    assert_eq!(s.apply(insert(c)).await.unwrap_err(), StoreError::NotFound);
    assert!(s.get_client(&fp('c')).await.unwrap().is_none());
    assert_eq!(
        s.apply(Mutation::SetClientState {
            fingerprint: fp('f'),
            state: ClientState::Disabled,
            at: now
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    s.apply(Mutation::SetClientState {
        fingerprint: fp('a'),
        state: ClientState::Disabled,
        at: now,
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_client(&fp('a')).await.unwrap().unwrap().state,
        ClientState::Disabled
    );
    assert_eq!(
        s.list_clients(Some(&org()), Some(ClientState::Active))
            .await
            .unwrap()
            .len(),
        1
    );
    s.apply(kek(1, "file")).await.unwrap();
    assert_eq!(
        s.apply(Mutation::InsertKek(KekRecord {
            version: 1,
            seal: "file".into(),
            wrapped: vec![2],
            created_at: now
        }))
        .await
        .unwrap_err(),
        StoreError::AlreadyExists
    );
    let keks = s.load_keks().await.unwrap();
    assert_eq!(
        keks.iter()
            .map(|k| (k.version, k.seal.as_str(), k.wrapped.clone()))
            .collect::<Vec<_>>(),
        vec![(1, "file", vec![1]), (1, "test-fixture", vec![1])],
        "ordered by version, then seal"
    );
}

pub async fn put_is_compare_and_set(f: &dyn Fixture) {
    let s = f.store();
    let s = &*s;
    let k = key('a', "k");
    put(s, &k, None, 1, b"one").await.unwrap();
    assert_eq!(
        put(s, &k, None, 1, b"again").await.unwrap_err(),
        StoreError::VersionConflict {
            current: Some(ver(1))
        }
    );
    assert_eq!(
        put(s, &k, Some(2), 3, b"skip").await.unwrap_err(),
        StoreError::VersionConflict {
            current: Some(ver(1))
        }
    );
    assert_eq!(
        put(s, &key('a', "absent"), Some(1), 2, b"x")
            .await
            .unwrap_err(),
        StoreError::VersionConflict { current: None }
    );
    put(s, &k, Some(1), 2, b"two").await.unwrap();
    let (d, v) = s.get_version(&k, None).await.unwrap().unwrap();
    assert_eq!(d.current_version, ver(2));
    assert_eq!(d.current_size, 3);
    assert_eq!(d.org, org());
    assert!(!d.deleted);
    assert_eq!(v.ciphertext, b"two");
    assert_eq!(v.wrapped_dek, vec![9; 60]);
    assert_eq!(v.meta.creator, fp('a'));
    let (_, v1) = s.get_version(&k, Some(ver(1))).await.unwrap().unwrap();
    assert_eq!(v1.ciphertext, b"one");
    assert!(s.get_version(&k, Some(ver(3))).await.unwrap().is_none());
    // Another owner's same name is a different deposit.
    assert!(s.get_deposit(&key('b', "k")).await.unwrap().is_none());
    put(s, &key('b', "k"), None, 1, b"b's").await.unwrap();
    let versions = s.list_versions(&k).await.unwrap();
    assert_eq!(
        versions.iter().map(|m| m.version).collect::<Vec<_>>(),
        vec![ver(1), ver(2)]
    );
    assert_eq!(versions[1].size, 3);
    // An ACL serial that moved is a version conflict too.
    let r = s
        .apply(Mutation::PutVersion {
            org: org(),
            key: k.clone(),
            expected_current: Some(ver(2)),
            expected_acl_serial: Some(7),
            version: version(3, b"three"),
        })
        .await;
    assert_eq!(
        r.unwrap_err(),
        StoreError::VersionConflict {
            current: Some(ver(2))
        }
    );
}

pub async fn deleted_deposits_refuse_versions_and_purge_removes_everything(f: &dyn Fixture) {
    let s = f.store();
    let s = &*s;
    let k = key('a', "k");
    put(s, &k, None, 1, b"one").await.unwrap();
    put(s, &k, Some(1), 2, b"two").await.unwrap();
    s.apply(Mutation::SetDeleted {
        key: k.clone(),
        deleted: true,
        at: ts(9),
    })
    .await
    .unwrap();
    assert_eq!(
        put(s, &k, Some(2), 3, b"x").await.unwrap_err(),
        StoreError::Deleted
    );
    let d = s.get_deposit(&k).await.unwrap().unwrap();
    assert!(d.deleted);
    assert_eq!(d.updated_at, ts(9));
    assert_eq!(
        s.apply(Mutation::SetDeleted {
            key: key('a', "nope"),
            deleted: true,
            at: ts(9)
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    // Restored, it takes versions again.
    s.apply(Mutation::SetDeleted {
        key: k.clone(),
        deleted: false,
        at: ts(10),
    })
    .await
    .unwrap();
    put(s, &k, Some(2), 3, b"three").await.unwrap();
    assert_eq!(
        s.apply(Mutation::Purge { key: k.clone() }).await.unwrap(),
        Applied::Purged(3)
    );
    assert!(s.get_deposit(&k).await.unwrap().is_none());
    assert!(s.list_versions(&k).await.unwrap().is_empty());
    assert!(s.get_grants(&k).await.unwrap().is_empty());
    assert_eq!(
        s.apply(Mutation::Purge { key: k.clone() })
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    // The name is free again.
    put(s, &k, None, 1, b"new").await.unwrap();
}

/// Names whose byte order differs from a natural-language collation's (`A` < `a`, `-` < `/` <
/// `B` < `_` < `b`), and prefixes with LIKE's wildcards in them: the store must compare bytes
/// and match prefixes literally.
pub async fn listing_is_byte_ordered_with_exact_prefixes_and_pages(f: &dyn Fixture) {
    let s = f.store();
    let s = &*s;
    for n in [
        "a", "a/b", "a/c", "ab", "b", "a-z", "a.z", "a_z", "zzz", "A", "aB", "a-b", "a_b",
    ] {
        put(s, &key('a', n), None, 1, b"x").await.unwrap();
    }
    put(s, &key('b', "a/secret"), None, 1, b"x").await.unwrap();
    s.apply(Mutation::SetDeleted {
        key: key('a', "a/c"),
        deleted: true,
        at: ts(3),
    })
    .await
    .unwrap();
    let owner = Principal::Client(fp('a'));
    let list = |prefix: &'static str, after: Option<&'static str>, limit: u32, deleted: bool| {
        let owner = owner.clone();
        async move {
            names(
                s.list_deposits(DepositListing {
                    owner: &owner,
                    prefix,
                    after,
                    limit,
                    include_deleted: deleted,
                })
                .await
                .unwrap(),
            )
        }
    };
    assert_eq!(list("a/", None, 100, false).await, ["a/b"]);
    assert_eq!(list("a/", None, 100, true).await, ["a/b", "a/c"]);
    assert_eq!(
        list("a", None, 100, false).await,
        ["a", "a-b", "a-z", "a.z", "a/b", "aB", "a_b", "a_z", "ab"]
    );
    assert_eq!(
        list("", None, 100, true).await,
        [
            "A", "a", "a-b", "a-z", "a.z", "a/b", "a/c", "aB", "a_b", "a_z", "ab", "b", "zzz"
        ]
    );
    // `_` and `%` are literal characters, not wildcards.
    assert_eq!(list("a_", None, 100, false).await, ["a_b", "a_z"]);
    assert!(list("a%", None, 100, true).await.is_empty());
    assert!(list("%", None, 100, true).await.is_empty());
    assert!(list("_", None, 100, true).await.is_empty());
    // Case matters.
    assert_eq!(list("A", None, 100, false).await, ["A"]);
    assert_eq!(list("aB", None, 100, false).await, ["aB"]);
    assert_eq!(list("", None, 2, false).await, ["A", "a"]);
    assert_eq!(
        list("", Some("a_b"), 100, false).await,
        ["a_z", "ab", "b", "zzz"]
    );
    assert!(list("nothing", None, 100, true).await.is_empty());
    // Paging with the last name as the cursor walks everything once, in order.
    let mut paged: Vec<String> = Vec::new();
    loop {
        let after = paged.last().cloned();
        let page = names(
            s.list_deposits(DepositListing {
                owner: &owner,
                prefix: "",
                after: after.as_deref(),
                limit: 3,
                include_deleted: true,
            })
            .await
            .unwrap(),
        );
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged, list("", None, 100, true).await);
}

pub async fn many_concurrent_writes_commit_and_are_seen_by_another_handle(f: &dyn Fixture) {
    let s = f.store();
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            // Every tenth write is doomed (wrong expected version) and must fail alone.
            let expected = if i % 10 == 0 { Some(5) } else { None };
            put(
                &*s,
                &key('a', &format!("k{i}")),
                expected,
                1,
                &i.to_be_bytes(),
            )
            .await
        }));
    }
    let mut ok = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(i % 10, 0, "write {i} failed: {e}");
                assert_eq!(e, StoreError::VersionConflict { current: None });
            }
        }
    }
    assert_eq!(ok, 270);
    let other = f.open_again().await;
    let owner = Principal::Client(fp('a'));
    let rows = other
        .list_deposits(DepositListing {
            owner: &owner,
            prefix: "k",
            after: None,
            limit: 1000,
            include_deleted: true,
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 270);
    let (_, v) = other
        .get_version(&key('a', "k7"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.ciphertext, 7u32.to_be_bytes());
}

pub async fn corrupt_rows_are_reported_not_decoded(f: &dyn Fixture) {
    f.write_bad_deposit_name().await;
    let s = f.store();
    let owner = Principal::Client(fp('a'));
    let r = s
        .list_deposits(DepositListing {
            owner: &owner,
            prefix: "",
            after: None,
            limit: 10,
            include_deleted: true,
        })
        .await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
}

pub async fn rewrap_is_compare_and_set_and_retire_refuses_used_versions(f: &dyn Fixture) {
    let s = f.store();
    let s = &*s;
    for i in 0..5 {
        put(s, &key('a', &format!("k{i}")), None, 1, b"x")
            .await
            .unwrap();
    }
    // A data key cannot name a version the keyring lacks.
    let mut v = version(1, b"y");
    v.kek_version = 2;
    let err = s
        .apply(Mutation::PutVersion {
            org: org(),
            key: key('a', "new"),
            expected_current: None,
            expected_acl_serial: None,
            version: v,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(s.get_deposit(&key('a', "new")).await.unwrap().is_none());

    s.apply(kek(2, "test-fixture")).await.unwrap();
    let stale = s
        .list_stale_wrapped(WrappedKind::DepositVersion, 2, None, 3)
        .await
        .unwrap();
    assert_eq!(stale.len(), 3);
    let rest = s
        .list_stale_wrapped(WrappedKind::DepositVersion, 2, Some(&stale[2].id), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2, "pagination continues after the cursor");
    let ids: Vec<String> = stale
        .iter()
        .chain(rest.iter())
        .map(|r| match &r.id {
            WrappedId::DepositVersion { key, .. } => key.name.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, ["k0", "k1", "k2", "k3", "k4"], "ordered by id");
    assert!(matches!(&stale[0].id, WrappedId::DepositVersion { org: o, .. } if *o == org()));
    assert_eq!(stale[0].kek_version, 1);
    assert_eq!(stale[0].wrapped, vec![9; 60]);

    // Retiring version 1 is refused while it is used.
    assert!(matches!(
        s.apply(Mutation::RetireKek { version: 1 }).await,
        Err(StoreError::InUse(_))
    ));
    for row in stale.iter().chain(rest.iter()) {
        s.apply(Mutation::Rewrap {
            id: row.id.clone(),
            expected_kek: 1,
            kek_version: 2,
            wrapped: vec![7; 60],
        })
        .await
        .unwrap();
    }
    // A second re-wrap from the old version is a conflict, not a silent overwrite.
    assert_eq!(
        s.apply(Mutation::Rewrap {
            id: stale[0].id.clone(),
            expected_kek: 1,
            kek_version: 2,
            wrapped: vec![8; 60],
        })
        .await
        .unwrap_err(),
        StoreError::VersionConflict { current: None }
    );
    let (_, v) = s.get_version(&key('a', "k0"), None).await.unwrap().unwrap();
    assert_eq!((v.kek_version, v.wrapped_dek), (2, vec![7; 60]));
    assert_eq!(
        s.kek_usage().await.unwrap(),
        vec![KekUsage {
            kind: WrappedKind::DepositVersion,
            kek_version: 2,
            count: 5
        }]
    );
    assert!(
        s.list_stale_wrapped(WrappedKind::DepositVersion, 2, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The current (newest) version can never be retired; an unused old one can.
    assert!(matches!(
        s.apply(Mutation::RetireKek { version: 2 }).await,
        Err(StoreError::InUse(_))
    ));
    s.apply(Mutation::RetireKek { version: 1 }).await.unwrap();
    assert_eq!(
        s.load_keks()
            .await
            .unwrap()
            .iter()
            .map(|k| k.version)
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(
        s.apply(Mutation::RetireKek { version: 1 })
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

/// The decided `Rewrap` contract: `NotFound` when the row is gone or `kek_version` names no
/// keyring row, `VersionConflict { current: None }` when another version wraps it now.
pub async fn rewrap_answers_not_found_for_missing_rows_and_keyring_versions(f: &dyn Fixture) {
    let s = f.store();
    let s = &*s;
    put(s, &key('a', "k"), None, 1, b"x").await.unwrap();
    s.apply(kek(2, "test-fixture")).await.unwrap();
    let row = s
        .list_stale_wrapped(WrappedKind::DepositVersion, 2, None, 1)
        .await
        .unwrap()
        .remove(0);
    let rewrap = |id: WrappedId, expected_kek: u32, kek_version: u32| Mutation::Rewrap {
        id,
        expected_kek,
        kek_version,
        wrapped: vec![7; 60],
    };
    assert_eq!(
        s.apply(rewrap(row.id.clone(), 1, 9)).await.unwrap_err(),
        StoreError::NotFound,
        "no keyring version 9"
    );
    assert_eq!(
        s.apply(rewrap(row.id.clone(), 3, 2)).await.unwrap_err(),
        StoreError::VersionConflict { current: None },
        "wrapped by 1, not 3"
    );
    s.apply(Mutation::Purge { key: key('a', "k") })
        .await
        .unwrap();
    assert_eq!(
        s.apply(rewrap(row.id.clone(), 1, 2)).await.unwrap_err(),
        StoreError::NotFound,
        "the row is gone"
    );
    assert_eq!(
        s.apply(rewrap(
            WrappedId::AuditSigningKey {
                key_id: "absent".into(),
                public_key: vec![1],
            },
            1,
            2
        ))
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
}

pub async fn seal_migration_keeps_only_the_new_rows(f: &dyn Fixture) {
    let s = f.store();
    s.apply(kek(1, "other-seal")).await.unwrap();
    assert_eq!(
        s.apply(Mutation::KeepOnlySeal {
            keep: "missing".into()
        })
        .await
        .unwrap_err(),
        StoreError::NotFound,
        "never deletes the whole keyring"
    );
    assert_eq!(s.load_keks().await.unwrap().len(), 2);
    s.apply(Mutation::KeepOnlySeal {
        keep: "other-seal".into(),
    })
    .await
    .unwrap();
    let keks = s.load_keks().await.unwrap();
    assert_eq!(keks.len(), 1);
    assert_eq!(keks[0].seal, "other-seal");
    assert_eq!(keks[0].created_at, ts(5));
}

/// Writes with their entries, batches of entries, and failures in between (a change that
/// fails, an entry whose insert fails): the chain holds exactly the committed ones, in one
/// unbroken order, and a change whose entry failed is not there either.
pub async fn audit_entries_commit_with_their_writes_and_failures_leave_no_hole(f: &dyn Fixture) {
    f.refuse_audit_target("/refused").await;
    let s = f.store();
    let now = ts(2);
    // Submitted together so that they share group-commit batches.
    let mut tasks = Vec::new();
    for (i, target) in ["/ok1", "/refused", "/dup", "/ok2"].into_iter().enumerate() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let c = match target {
                "/dup" => 'a',
                _ => ['c', 'd', 'e', 'f'][i],
            };
            s.apply_audited(insert(client_record(fp(c), now)), Some(event(target)))
                .await
        }));
    }
    let batch = s.clone();
    tasks.push(tokio::spawn(async move {
        batch
            .append_audit(Arc::new(vec![event("/r1"), event("/r2")]))
            .await
            .map(|_| Applied::Done)
    }));
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert!(results[0].is_ok());
    assert!(
        matches!(results[1], Err(StoreError::Unavailable(_))),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], Err(StoreError::AlreadyExists));
    assert!(results[3].is_ok() && results[4].is_ok());
    // The client whose entry was refused does not exist.
    assert!(s.get_client(&fp('d')).await.unwrap().is_none());
    assert!(s.get_client(&fp('c')).await.unwrap().is_some());
    let entries = s.audit_entries(1, None, 100).await.unwrap();
    let mut targets: Vec<_> = entries.iter().map(|e| e.event.target.as_str()).collect();
    targets.sort();
    assert_eq!(targets, ["/ok1", "/ok2", "/r1", "/r2"]);
    let report = keysafe_proto::audit::verify(&entries, &[], &[0u8; 32], None);
    assert_eq!(report.broken, None, "{report:?}");
    assert_eq!(
        s.audit_head(),
        (4, entries.last().unwrap().hash.clone()),
        "the head in memory is the committed one"
    );
    // Filters: from a seq, since a time, at most a limit.
    assert_eq!(s.audit_entries(3, None, 100).await.unwrap().len(), 2);
    assert_eq!(s.audit_entries(1, None, 1).await.unwrap().len(), 1);
    assert!(
        s.audit_entries(1, Some(ts(2)), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // A store opened afterwards starts from the stored head.
    let again = f.open_again().await;
    assert_eq!(again.audit_head().0, 4);
}

/// Two handles on one database (two nodes) append at the same time: the entries form one
/// chain, numbered without gaps, that verifies.
pub async fn audit_chain_stays_one_chain_across_two_writers(f: &dyn Fixture) {
    let one = f.store();
    let two = f.open_again().await;
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let s = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            if i % 4 < 2 {
                s.append_audit(Arc::new(vec![
                    event(&format!("/read{i}")),
                    event(&format!("/read{i}b")),
                ]))
                .await
            } else {
                s.apply_audited(
                    Mutation::SetClientState {
                        fingerprint: fp('b'),
                        state: ClientState::Active,
                        at: ts(i64::from(i)),
                    },
                    Some(event(&format!("/write{i}"))),
                )
                .await
                .map(|_| ())
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let entries = one.audit_entries(1, None, 1000).await.unwrap();
    assert_eq!(entries.len(), 60);
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=60).collect::<Vec<u64>>()
    );
    let report = keysafe_proto::audit::verify(&entries, &[], &[0u8; 32], None);
    assert_eq!(report.broken, None, "{report:?}");
    // Each handle's head is one it committed or saw; after one more write each, both agree.
    for s in [&one, &two] {
        s.append_audit(Arc::new(vec![event("/last")]))
            .await
            .unwrap();
    }
    let last = one.audit_entries(62, None, 10).await.unwrap();
    assert_eq!(two.audit_head(), (62, last[0].hash.clone()));
    assert!(one.audit_head().0 >= 61);
}

pub async fn token_rotation_is_compare_and_set_for_active_clients(f: &dyn Fixture) {
    let s = f.store();
    let rotate = |expected: u64, counter: u64, at: i64| Mutation::RotateToken {
        fingerprint: fp('a'),
        expected_counter: expected,
        token: TokenState {
            counter,
            hash: Some(format!("h{counter}")),
            recent: vec![keysafe_core::store::ReplacedToken {
                hash: format!("h{}", counter.saturating_sub(1)),
                replaced_at: ts(at),
            }],
            rotated_at: ts(at),
        },
        at: ts(at),
    };
    s.apply(rotate(0, 1, 10)).await.unwrap();
    let c = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(c.token.counter, 1);
    assert_eq!(c.token.hash.as_deref(), Some("h1"));
    assert_eq!(c.token.recent.len(), 1);
    assert_eq!(c.token.rotated_at, ts(10));
    assert_eq!(c.last_seen_at, Some(ts(10)));
    assert_eq!(
        s.apply(rotate(0, 1, 11)).await.unwrap_err(),
        StoreError::Conflict,
        "the counter moved"
    );
    assert_eq!(
        s.apply(Mutation::RotateToken {
            fingerprint: fp('9'),
            expected_counter: 0,
            token: TokenState {
                counter: 1,
                hash: None,
                recent: vec![],
                rotated_at: ts(1)
            },
            at: ts(1),
        })
        .await
        .unwrap_err(),
        StoreError::Conflict
    );
    // A suspected clone gets no rotation until an administrator resets its token.
    s.apply(Mutation::MarkSuspectedClone {
        fingerprint: fp('a'),
        reason: "token reuse".into(),
        at: ts(12),
    })
    .await
    .unwrap();
    let c = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(c.state, ClientState::SuspectedClone);
    assert_eq!(c.state_reason.as_deref(), Some("token reuse"));
    assert_eq!(
        s.apply(rotate(1, 2, 13)).await.unwrap_err(),
        StoreError::Conflict
    );
    s.apply(Mutation::ResetToken {
        fingerprint: fp('a'),
        at: ts(14),
    })
    .await
    .unwrap();
    let c = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(c.state, ClientState::Active);
    assert_eq!(c.state_reason, None);
    assert_eq!(c.token.hash, None);
    assert!(c.token.recent.is_empty());
    assert_eq!(c.token.counter, 1, "the counter is kept");
    s.apply(rotate(1, 2, 15)).await.unwrap();
    // A reset does not revive a disabled client.
    s.apply(Mutation::SetClientState {
        fingerprint: fp('a'),
        state: ClientState::Disabled,
        at: ts(16),
    })
    .await
    .unwrap();
    s.apply(Mutation::ResetToken {
        fingerprint: fp('a'),
        at: ts(17),
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_client(&fp('a')).await.unwrap().unwrap().state,
        ClientState::Disabled
    );
    assert_eq!(
        s.apply(rotate(2, 3, 18)).await.unwrap_err(),
        StoreError::Conflict
    );
    for m in [
        Mutation::MarkSuspectedClone {
            fingerprint: fp('9'),
            reason: "x".into(),
            at: ts(1),
        },
        Mutation::ResetToken {
            fingerprint: fp('9'),
            at: ts(1),
        },
    ] {
        assert_eq!(s.apply(m).await.unwrap_err(), StoreError::NotFound);
    }
}

pub async fn concurrent_rotations_from_two_handles_exactly_one_wins(f: &dyn Fixture) {
    let handles = [f.store(), f.open_again().await];
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let s = handles[(i % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            s.apply(Mutation::RotateToken {
                fingerprint: fp('a'),
                expected_counter: 0,
                token: TokenState {
                    counter: 1,
                    hash: Some(format!("winner{i}")),
                    recent: vec![],
                    rotated_at: ts(20),
                },
                at: ts(20),
            })
            .await
        }));
    }
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(_) => winners.push(i),
            Err(e) => assert_eq!(e, StoreError::Conflict),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rotation wins");
    let c = handles[1].get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(c.token.counter, 1);
    assert_eq!(c.token.hash, Some(format!("winner{}", winners[0])));
}

pub async fn concurrent_puts_with_the_same_expectation_exactly_one_wins(f: &dyn Fixture) {
    let handles = [f.store(), f.open_again().await];
    for (expected, n) in [(None, 1u64), (Some(1), 2)] {
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let s = handles[usize::from(i % 2)].clone();
            tasks.push(tokio::spawn(async move {
                put(&*s, &key('a', "race"), expected, n, &[i]).await
            }));
        }
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(_) => winners.push(i as u8),
                Err(e) => assert_eq!(
                    e,
                    StoreError::VersionConflict {
                        current: Some(ver(n))
                    }
                ),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one put of version {n} wins");
        let (d, v) = handles[0]
            .get_version(&key('a', "race"), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.current_version, ver(n));
        assert_eq!(v.ciphertext, vec![winners[0]]);
    }
    assert_eq!(
        handles[1]
            .list_versions(&key('a', "race"))
            .await
            .unwrap()
            .len(),
        2
    );
}

pub async fn registration_tokens_are_single_use_unexpired_and_per_org(f: &dyn Fixture) {
    let s = f.store();
    s.apply(Mutation::CreateOrg(org_record("other", AuthMode::Approval)))
        .await
        .unwrap();
    let token = |hash: &str, org: &str, expires: i64| {
        Mutation::InsertRegistrationToken(RegistrationTokenRecord {
            hash: hash.into(),
            org: OrgName::parse(org).unwrap(),
            created_by: fp('a'),
            created_at: ts(1),
            expires_at: ts(expires),
        })
    };
    s.apply(token("t-acme", "acme", 100)).await.unwrap();
    s.apply(token("t-old", "acme", 50)).await.unwrap();
    assert_eq!(
        s.apply(token("t-acme", "acme", 100)).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    assert_eq!(
        s.apply(token("t-x", "nowhere", 100)).await.unwrap_err(),
        StoreError::NotFound
    );
    let register = |c: char, hash: &str, at: i64| Mutation::InsertClient {
        client: client_record(fp(c), ts(at)),
        consume_token: Some(hash.into()),
    };
    // Expired (at or after expiry), unknown, or for another organisation: refused, nothing made.
    for (hash, at) in [("t-old", 50), ("t-unknown", 10)] {
        assert_eq!(
            s.apply(register('c', hash, at)).await.unwrap_err(),
            StoreError::NotFound
        );
    }
    let mut elsewhere = client_record(fp('c'), ts(10));
    elsewhere.org = OrgName::parse("other").unwrap();
    assert_eq!(
        s.apply(Mutation::InsertClient {
            client: elsewhere,
            consume_token: Some("t-acme".into()),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    assert!(s.get_client(&fp('c')).await.unwrap().is_none());
    s.apply(register('c', "t-acme", 10)).await.unwrap();
    assert!(s.get_client(&fp('c')).await.unwrap().is_some());
    assert_eq!(
        s.apply(register('d', "t-acme", 11)).await.unwrap_err(),
        StoreError::NotFound,
        "used once"
    );
    // A registration that fails on the client insert leaves the token unused.
    s.apply(token("t-two", "acme", 100)).await.unwrap();
    assert_eq!(
        s.apply(register('c', "t-two", 12)).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    s.apply(register('e', "t-two", 13)).await.unwrap();
}

pub async fn disable_unactivated_selects_never_seen_ordinary_clients(f: &dyn Fixture) {
    let s = f.store();
    // a, b: active, created at 1, never seen (seeded).
    let mut pending = client_record(fp('c'), ts(1));
    pending.state = ClientState::Pending;
    let mut admin = client_record(fp('d'), ts(1));
    admin.role = ClientRole::Admin;
    let mut seen = client_record(fp('e'), ts(1));
    seen.last_seen_at = Some(ts(3));
    let young = client_record(fp('f'), ts(100));
    let mut disabled = client_record(fp('0'), ts(1));
    disabled.state = ClientState::Disabled;
    for c in [pending, admin, seen, young, disabled] {
        s.apply(insert(c)).await.unwrap();
    }
    let applied = s
        .apply(Mutation::DisableUnactivated {
            registered_before: ts(50),
            at: ts(60),
        })
        .await
        .unwrap();
    let Applied::Clients(mut fps) = applied else {
        panic!("{applied:?}")
    };
    fps.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(fps, vec![fp('a'), fp('b'), fp('c')]);
    for (c, state) in [
        ('a', ClientState::Disabled),
        ('c', ClientState::Disabled),
        ('d', ClientState::Active),
        ('e', ClientState::Active),
        ('f', ClientState::Active),
    ] {
        let r = s.get_client(&fp(c)).await.unwrap().unwrap();
        assert_eq!(r.state, state, "client {c}");
        if state == ClientState::Disabled {
            assert_eq!(r.updated_at, ts(60));
            assert!(r.state_reason.is_some());
        }
    }
    assert_eq!(
        s.apply(Mutation::DisableUnactivated {
            registered_before: ts(50),
            at: ts(61),
        })
        .await
        .unwrap(),
        Applied::Clients(vec![])
    );
}

pub async fn org_auth_roles_and_client_listing(f: &dyn Fixture) {
    let s = f.store();
    s.apply(Mutation::CreateOrg(org_record("Zeta", AuthMode::Approval)))
        .await
        .unwrap();
    s.apply(Mutation::CreateOrg(org_record("beta", AuthMode::Approval)))
        .await
        .unwrap();
    assert_eq!(
        s.list_orgs()
            .await
            .unwrap()
            .iter()
            .map(|o| o.name.to_string())
            .collect::<Vec<_>>(),
        ["Zeta", "acme", "beta"],
        "byte order"
    );
    s.apply(Mutation::SetOrgAuth {
        name: org(),
        mode: AuthMode::Approval,
        auth_hash: None,
        at: ts(7),
    })
    .await
    .unwrap();
    let o = s.get_org(&org()).await.unwrap().unwrap();
    assert_eq!(
        (o.auth_mode, o.auth_hash, o.updated_at, o.created_at),
        (AuthMode::Approval, None, ts(7), ts(1))
    );
    assert_eq!(o.contacts, ["sec@example.com"]);
    assert!(
        s.get_org(&OrgName::parse("nowhere").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.apply(Mutation::SetOrgAuth {
            name: OrgName::parse("nowhere").unwrap(),
            mode: AuthMode::Approval,
            auth_hash: None,
            at: ts(7),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    s.apply(Mutation::SetClientRole {
        fingerprint: fp('b'),
        role: ClientRole::Admin,
        at: ts(8),
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_client(&fp('b')).await.unwrap().unwrap().role,
        ClientRole::Admin
    );
    assert_eq!(
        s.apply(Mutation::SetClientRole {
            fingerprint: fp('9'),
            role: ClientRole::Admin,
            at: ts(8),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    let mut beta = client_record(fp('c'), ts(0));
    beta.org = OrgName::parse("beta").unwrap();
    beta.name = Some(keysafe_proto::ClientName::parse("web-1").unwrap());
    beta.recipient = Some("age1xyz".into());
    s.apply(insert(beta)).await.unwrap();
    // Ordered by organisation, then registration time, then fingerprint.
    assert_eq!(
        s.list_clients(None, None)
            .await
            .unwrap()
            .iter()
            .map(|c| c.fingerprint.clone())
            .collect::<Vec<_>>(),
        vec![fp('a'), fp('b'), fp('c')]
    );
    let c = s.get_client(&fp('c')).await.unwrap().unwrap();
    assert_eq!(c.name.unwrap().as_str(), "web-1");
    assert_eq!(c.recipient.as_deref(), Some("age1xyz"));
    assert_eq!(c.cert_der, vec![1, 2, 3]);
    assert_eq!(
        s.list_clients(Some(&OrgName::parse("beta").unwrap()), None)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn groups_keep_epochs_members_and_wrapped_keys(f: &dyn Fixture) {
    let s = f.store();
    let g = GroupName::parse("ops").unwrap();
    let wk = |epoch: u64, member: char| WrappedKeyRecord {
        epoch,
        member: fp(member),
        wrapped: vec![epoch as u8, member as u8],
    };
    let create = Mutation::CreateGroup {
        org: org(),
        name: g.clone(),
        recipient: "age1epoch1".into(),
        keys: vec![wk(1, 'a')],
        at: ts(10),
    };
    s.apply(create.clone()).await.unwrap();
    assert_eq!(
        s.apply(create).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    assert_eq!(
        s.apply(Mutation::CreateGroup {
            org: OrgName::parse("nowhere").unwrap(),
            name: g.clone(),
            recipient: "r".into(),
            keys: vec![],
            at: ts(10),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    let add = |member: char, org: OrgName, name: GroupName| Mutation::AddGroupMember {
        org,
        name,
        member: fp(member),
        at: ts(11),
    };
    s.apply(add('b', org(), g.clone())).await.unwrap();
    assert_eq!(
        s.apply(add('b', org(), g.clone())).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    assert_eq!(
        s.apply(add('9', org(), g.clone())).await.unwrap_err(),
        StoreError::NotFound,
        "no such client"
    );
    assert_eq!(
        s.apply(add('b', org(), GroupName::parse("none").unwrap()))
            .await
            .unwrap_err(),
        StoreError::NotFound,
        "no such group"
    );
    // Admission stores keys for members only, keeps what exists.
    s.apply(Mutation::AdmitGroupMember {
        org: org(),
        name: g.clone(),
        keys: vec![wk(1, 'b'), wk(1, 'a')],
        at: ts(12),
    })
    .await
    .unwrap();
    let mut not_member = wk(1, 'b');
    not_member.member = fp('9');
    s.apply(Mutation::AdmitGroupMember {
        org: org(),
        name: g.clone(),
        keys: vec![not_member],
        at: ts(12),
    })
    .await
    .unwrap();
    assert_eq!(
        s.group_keys(&org(), &g, &fp('b')).await.unwrap(),
        vec![wk(1, 'b')]
    );
    assert!(s.group_keys(&org(), &g, &fp('9')).await.unwrap().is_empty());
    assert_eq!(
        s.apply(Mutation::AdmitGroupMember {
            org: org(),
            name: GroupName::parse("none").unwrap(),
            keys: vec![],
            at: ts(12),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    let group = s.get_group(&org(), &g).await.unwrap().unwrap();
    assert_eq!(group.epoch, 1);
    assert_eq!(group.epochs, vec![(1, "age1epoch1".to_owned())]);
    assert_eq!(
        group
            .members
            .iter()
            .map(|m| (m.fingerprint.clone(), m.epochs.clone()))
            .collect::<Vec<_>>(),
        vec![(fp('a'), vec![1]), (fp('b'), vec![1])]
    );
    assert_eq!(group.created_at, ts(10));
    assert_eq!(group.updated_at, ts(12));
    // Removal opens the next epoch only if the caller saw the current one.
    let remove = |member: char, expected_epoch: u64| Mutation::RemoveGroupMember {
        org: org(),
        name: g.clone(),
        member: fp(member),
        expected_epoch,
        recipient: "age1epoch2".into(),
        keys: vec![wk(2, 'b')],
        at: ts(13),
    };
    assert_eq!(
        s.apply(remove('a', 2)).await.unwrap_err(),
        StoreError::Conflict
    );
    assert_eq!(
        s.apply(remove('9', 1)).await.unwrap_err(),
        StoreError::NotFound
    );
    s.apply(remove('a', 1)).await.unwrap();
    assert_eq!(
        s.apply(remove('a', 1)).await.unwrap_err(),
        StoreError::Conflict
    );
    let group = s.get_group(&org(), &g).await.unwrap().unwrap();
    assert_eq!(group.epoch, 2);
    assert_eq!(group.epochs.len(), 2);
    assert_eq!(
        group
            .members
            .iter()
            .map(|m| (m.fingerprint.clone(), m.epochs.clone()))
            .collect::<Vec<_>>(),
        vec![(fp('b'), vec![1, 2])]
    );
    assert!(s.group_keys(&org(), &g, &fp('a')).await.unwrap().is_empty());
    // Listing and membership.
    s.apply(Mutation::CreateGroup {
        org: org(),
        name: GroupName::parse("dev").unwrap(),
        recipient: "age1dev".into(),
        keys: vec![wk(1, 'a')],
        at: ts(14),
    })
    .await
    .unwrap();
    let names = |gs: Vec<keysafe_core::store::GroupRecord>| {
        gs.into_iter()
            .map(|g| g.name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(s.list_groups(None, None).await.unwrap()),
        ["dev", "ops"]
    );
    assert_eq!(
        names(s.list_groups(Some(&org()), Some(&fp('a'))).await.unwrap()),
        ["dev"]
    );
    assert_eq!(
        s.member_groups(&org(), &fp('b')).await.unwrap(),
        vec![g.clone()]
    );
    assert!(
        s.get_group(&org(), &GroupName::parse("none").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // A deposit owned by the group is keyed by its stored principal.
    let owned = DepositKey {
        owner: Principal::Group {
            org: org(),
            name: g.clone(),
        },
        name: DepositName::parse("shared").unwrap(),
    };
    s.apply(Mutation::PutVersion {
        org: org(),
        key: owned.clone(),
        expected_current: None,
        expected_acl_serial: None,
        version: version(1, b"g"),
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_deposit(&owned).await.unwrap().unwrap().owner,
        owned.owner
    );
}

pub async fn acl_swap_is_compare_and_set_and_replaces_versions(f: &dyn Fixture) {
    let s = f.store();
    let s = &*s;
    let k = key('a', "doc");
    put(s, &k, None, 1, b"one").await.unwrap();
    put(s, &k, Some(1), 2, b"two").await.unwrap();
    let grant = |who: Principal, access: Access| GrantRecord {
        grantee: who,
        access,
        granted_by: fp('a'),
        granted_at: ts(20),
    };
    let group = Principal::Group {
        org: org(),
        name: GroupName::parse("ops").unwrap(),
    };
    let mut re = version(2, b"two, for b too");
    re.kek_version = 1;
    let swap =
        |current: u64, serial: u64, grants: Vec<GrantRecord>, replace: Vec<VersionRecord>| {
            Mutation::SetAcl {
                key: k.clone(),
                expected_current: ver(current),
                expected_acl_serial: serial,
                grants,
                replace,
                at: ts(21),
            }
        };
    s.apply(swap(
        2,
        0,
        vec![
            grant(Principal::Client(fp('b')), Access::Read),
            grant(group.clone(), Access::Write),
        ],
        vec![re.clone()],
    ))
    .await
    .unwrap();
    let d = s.get_deposit(&k).await.unwrap().unwrap();
    assert_eq!(d.acl_serial, 1);
    assert_eq!(d.current_size, re.meta.size);
    assert_eq!(d.updated_at, ts(21));
    let (_, v) = s.get_version(&k, None).await.unwrap().unwrap();
    assert_eq!(v.ciphertext, b"two, for b too");
    let grants = s.get_grants(&k).await.unwrap();
    assert_eq!(grants.len(), 2);
    assert!(grants.contains(&grant(group.clone(), Access::Write)));
    let shared = s
        .list_shared(&[Principal::Client(fp('b')), fp_principal('9')])
        .await
        .unwrap();
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].0.name, k.name);
    assert_eq!(shared[0].1.access, Access::Read);
    assert_eq!(s.list_shared(std::slice::from_ref(&group)).await.unwrap().len(), 1);
    // Stale serial, stale version: conflicts, nothing changes.
    assert_eq!(
        s.apply(swap(2, 0, vec![], vec![])).await.unwrap_err(),
        StoreError::Conflict
    );
    assert_eq!(
        s.apply(swap(1, 1, vec![], vec![])).await.unwrap_err(),
        StoreError::Conflict
    );
    // A version to replace that does not exist fails the whole swap.
    assert_eq!(
        s.apply(swap(2, 1, vec![], vec![version(9, b"x")]))
            .await
            .unwrap_err(),
        StoreError::Conflict
    );
    assert_eq!(s.get_grants(&k).await.unwrap().len(), 2);
    assert_eq!(s.get_deposit(&k).await.unwrap().unwrap().acl_serial, 1);
    // Puts that name the ACL serial see it.
    let put_with_serial = |serial: u64, n: u64| Mutation::PutVersion {
        org: org(),
        key: k.clone(),
        expected_current: Some(ver(n - 1)),
        expected_acl_serial: Some(serial),
        version: version(n, b"next"),
    };
    assert_eq!(
        s.apply(put_with_serial(0, 3)).await.unwrap_err(),
        StoreError::VersionConflict {
            current: Some(ver(2))
        }
    );
    s.apply(put_with_serial(1, 3)).await.unwrap();
    // Emptying the ACL; a deleted deposit takes no ACL change.
    s.apply(swap(3, 1, vec![], vec![])).await.unwrap();
    assert!(s.get_grants(&k).await.unwrap().is_empty());
    assert!(
        s.list_shared(&[Principal::Client(fp('b'))])
            .await
            .unwrap()
            .is_empty()
    );
    s.apply(Mutation::SetDeleted {
        key: k.clone(),
        deleted: true,
        at: ts(22),
    })
    .await
    .unwrap();
    assert_eq!(
        s.apply(swap(3, 2, vec![], vec![])).await.unwrap_err(),
        StoreError::Conflict
    );
}

fn fp_principal(c: char) -> Principal {
    Principal::Client(fp(c))
}

pub async fn audit_key_checkpoints_and_kek_usage_cover_both_kinds(f: &dyn Fixture) {
    let s = f.store();
    assert!(s.audit_signing_key().await.unwrap().is_none());
    let k = AuditKeyRecord {
        key_id: "k1".into(),
        public_key: vec![1; 32],
        kek_version: 1,
        wrapped: vec![2; 48],
        created_at: ts(30),
    };
    s.apply(Mutation::InsertAuditKey(k.clone())).await.unwrap();
    let mut other = k.clone();
    other.key_id = "k2".into();
    assert_eq!(
        s.apply(Mutation::InsertAuditKey(other)).await.unwrap_err(),
        StoreError::AlreadyExists,
        "one signing key"
    );
    assert_eq!(s.audit_signing_key().await.unwrap(), Some(k.clone()));
    let cp = |seq: u64, sig: &str| AuditCheckpoint {
        seq,
        hash: format!("h{seq}"),
        signed_at: 40,
        key_id: "k1".into(),
        signature: sig.into(),
    };
    s.apply(Mutation::InsertAuditCheckpoint(cp(5, "first")))
        .await
        .unwrap();
    s.apply(Mutation::InsertAuditCheckpoint(cp(5, "second")))
        .await
        .unwrap();
    s.apply(Mutation::InsertAuditCheckpoint(cp(9, "x")))
        .await
        .unwrap();
    assert_eq!(
        s.audit_checkpoints(0).await.unwrap(),
        vec![cp(5, "first"), cp(9, "x")],
        "a checkpoint of a seq is written once"
    );
    assert_eq!(s.audit_checkpoints(6).await.unwrap(), vec![cp(9, "x")]);
    put(&*s, &key('a', "k"), None, 1, b"x").await.unwrap();
    s.apply(kek(2, "test-fixture")).await.unwrap();
    assert_eq!(
        s.kek_usage().await.unwrap(),
        vec![
            KekUsage {
                kind: WrappedKind::DepositVersion,
                kek_version: 1,
                count: 1
            },
            KekUsage {
                kind: WrappedKind::AuditSigningKey,
                kek_version: 1,
                count: 1
            },
        ]
    );
    let stale = s
        .list_stale_wrapped(WrappedKind::AuditSigningKey, 2, None, 10)
        .await
        .unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(
        stale[0].id,
        WrappedId::AuditSigningKey {
            key_id: "k1".into(),
            public_key: vec![1; 32]
        }
    );
    assert!(
        s.list_stale_wrapped(WrappedKind::AuditSigningKey, 2, Some(&stale[0].id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    s.apply(Mutation::Rewrap {
        id: stale[0].id.clone(),
        expected_kek: 1,
        kek_version: 2,
        wrapped: vec![3; 48],
    })
    .await
    .unwrap();
    let now = s.audit_signing_key().await.unwrap().unwrap();
    assert_eq!((now.kek_version, now.wrapped), (2, vec![3; 48]));
    assert!(matches!(
        s.apply(Mutation::RetireKek { version: 1 }).await,
        Err(StoreError::InUse(_))
    ));
}

pub async fn stats_count_clients_and_deposits(f: &dyn Fixture) {
    let s = f.store();
    put(&*s, &key('a', "x"), None, 1, b"1").await.unwrap();
    put(&*s, &key('a', "x"), Some(1), 2, b"2").await.unwrap();
    put(&*s, &key('b', "y"), None, 1, b"1").await.unwrap();
    s.apply(Mutation::SetClientState {
        fingerprint: fp('b'),
        state: ClientState::Pending,
        at: ts(2),
    })
    .await
    .unwrap();
    let st = s.stats().await.unwrap();
    assert_eq!(st.deposits, 2);
    assert_eq!(st.deposit_versions, 3);
    let mut by_state = st.clients_by_state.clone();
    by_state.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        by_state,
        vec![(ClientState::Active, 1), (ClientState::Pending, 1)]
    );
    assert!(st.pool_size >= 1);
    s.ping().await.unwrap();
}
