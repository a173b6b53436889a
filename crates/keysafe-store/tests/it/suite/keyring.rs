//! The keyring: rows per seal and version, re-wrap, stale rows and usage, retirement, the end of
//! a seal migration.

use super::*;
use keysafe_core::store::{AuditKeyRecord, KekUsage, WrappedId, WrappedKind};

fn rewrap(id: &WrappedId, expected_kek: u32, kek_version: u32, fill: u8) -> Mutation {
    Mutation::Rewrap {
        id: id.clone(),
        expected_kek,
        kek_version,
        wrapped: vec![fill; 60],
    }
}

fn deposit_id(owner: char, name: &str, n: u64) -> WrappedId {
    WrappedId::DepositVersion {
        org: org(),
        key: key(owner, name),
        version: ver(n),
    }
}

fn audit_key(kek_version: u32) -> AuditKeyRecord {
    AuditKeyRecord {
        key_id: "k1".into(),
        public_key: vec![7; 32],
        kek_version,
        wrapped: vec![1; 60],
        created_at: ts(3),
    }
}

async fn versions(c: &Ctx) -> Vec<(u32, String)> {
    c.store
        .load_keks()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.version, k.seal))
        .collect()
}

pub async fn keyring_rows_are_unique_per_seal_and_version(b: &dyn TestBackend) {
    let c = Ctx::empty(b).await;
    let s = &c.store;
    assert!(s.load_keks().await.unwrap().is_empty());
    s.apply(kek(2, "file")).await.unwrap();
    s.apply(kek(1, "file")).await.unwrap();
    s.apply(kek(1, "hsm")).await.unwrap();
    assert_eq!(
        s.apply(kek(1, "file")).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    // By version, then seal.
    assert_eq!(
        versions(&c).await,
        [(1, "file".into()), (1, "hsm".into()), (2, "file".into())]
    );
    let first = &s.load_keks().await.unwrap()[0];
    assert_eq!(
        (first.wrapped.clone(), first.created_at),
        (vec![1], ts(5)),
        "the first row is kept"
    );
}

pub async fn rewrap_is_compare_and_set(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    c.put(&key('a', "k"), None, 1, b"x").await.unwrap();
    s.apply(Mutation::InsertAuditKey(audit_key(1)))
        .await
        .unwrap();
    s.apply(kek(2, "test-fixture")).await.unwrap();
    let id = deposit_id('a', "k", 1);
    assert_eq!(
        s.apply(rewrap(&id, 1, 3, 7)).await.unwrap_err(),
        StoreError::NotFound,
        "the target keyring version does not exist"
    );
    s.apply(rewrap(&id, 1, 2, 7)).await.unwrap();
    let (_, v, _) = std::sync::Arc::unwrap_or_clone(
        s.get_version(&key('a', "k"), None).await.unwrap().unwrap(),
    );
    assert_eq!((v.kek_version, v.wrapped_dek), (2, vec![7; 60]));
    assert_eq!(v.ciphertext, b"x", "only the data key changes");
    assert_eq!(
        s.apply(rewrap(&id, 1, 2, 8)).await.unwrap_err(),
        StoreError::VersionConflict { current: None },
        "no longer wrapped by the expected version"
    );
    assert_eq!(
        s.apply(rewrap(&deposit_id('a', "k", 2), 1, 2, 8))
            .await
            .unwrap_err(),
        StoreError::NotFound,
        "no such version"
    );
    assert_eq!(
        s.apply(rewrap(&deposit_id('a', "gone", 1), 1, 2, 8))
            .await
            .unwrap_err(),
        StoreError::NotFound,
        "no such deposit"
    );
    // The audit signing key follows the same contract.
    let ak = WrappedId::AuditSigningKey {
        key_id: "k1".into(),
        public_key: vec![7; 32],
    };
    s.apply(rewrap(&ak, 1, 2, 9)).await.unwrap();
    let stored = s.audit_signing_key().await.unwrap().unwrap();
    assert_eq!((stored.kek_version, stored.wrapped), (2, vec![9; 60]));
    assert_eq!(
        s.apply(rewrap(&ak, 1, 2, 9)).await.unwrap_err(),
        StoreError::VersionConflict { current: None }
    );
    let missing = WrappedId::AuditSigningKey {
        key_id: "k2".into(),
        public_key: vec![],
    };
    assert_eq!(
        s.apply(rewrap(&missing, 1, 2, 9)).await.unwrap_err(),
        StoreError::NotFound
    );
}

pub async fn stale_rows_page_and_usage_counts(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    for i in 0..5 {
        c.put(&key('a', &format!("k{i}")), None, 1, b"x")
            .await
            .unwrap();
    }
    c.put(&key('a', "k0"), Some(1), 2, b"x").await.unwrap();
    c.put(&key('b', "k0"), None, 1, b"x").await.unwrap();
    s.apply(Mutation::InsertAuditKey(audit_key(1)))
        .await
        .unwrap();
    s.apply(kek(2, "test-fixture")).await.unwrap();
    assert_eq!(
        s.kek_usage().await.unwrap(),
        [
            KekUsage {
                kind: WrappedKind::DepositVersion,
                kek_version: 1,
                count: 7
            },
            KekUsage {
                kind: WrappedKind::AuditSigningKey,
                kek_version: 1,
                count: 1
            },
        ]
    );
    let page = s
        .list_stale_wrapped(WrappedKind::DepositVersion, 2, None, 3)
        .await
        .unwrap();
    let ids: Vec<WrappedId> = page.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        ids,
        [
            deposit_id('a', "k0", 1),
            deposit_id('a', "k0", 2),
            deposit_id('a', "k1", 1)
        ],
        "by owner, name, version"
    );
    assert_eq!(
        (page[0].kek_version, page[0].wrapped.clone()),
        (1, vec![9; 60])
    );
    let rest = s
        .list_stale_wrapped(WrappedKind::DepositVersion, 2, Some(&page[2].id), 10)
        .await
        .unwrap();
    let rest_ids: Vec<WrappedId> = rest.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        rest_ids,
        [
            deposit_id('a', "k2", 1),
            deposit_id('a', "k3", 1),
            deposit_id('a', "k4", 1),
            deposit_id('b', "k0", 1),
        ]
    );
    for row in page.iter().chain(rest.iter()) {
        s.apply(rewrap(&row.id, 1, 2, 7)).await.unwrap();
    }
    assert!(
        s.list_stale_wrapped(WrappedKind::DepositVersion, 2, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let keys = s
        .list_stale_wrapped(WrappedKind::AuditSigningKey, 2, None, 10)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        keys[0].id,
        WrappedId::AuditSigningKey {
            key_id: "k1".into(),
            public_key: vec![7; 32]
        }
    );
    assert!(
        s.list_stale_wrapped(WrappedKind::AuditSigningKey, 2, Some(&keys[0].id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.kek_usage().await.unwrap(),
        [
            KekUsage {
                kind: WrappedKind::DepositVersion,
                kek_version: 2,
                count: 7
            },
            KekUsage {
                kind: WrappedKind::AuditSigningKey,
                kek_version: 1,
                count: 1
            },
        ]
    );
}

pub async fn retire_refuses_used_current_and_unknown_versions(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    c.put(&key('a', "k"), None, 1, b"x").await.unwrap();
    s.apply(kek(2, "test-fixture")).await.unwrap();
    s.apply(kek(2, "other-seal")).await.unwrap();
    let retire = |v| Mutation::RetireKek { version: v };
    assert!(
        matches!(s.apply(retire(1)).await, Err(StoreError::InUse(_))),
        "a data key uses it"
    );
    s.apply(rewrap(&deposit_id('a', "k", 1), 1, 2, 7))
        .await
        .unwrap();
    s.apply(Mutation::InsertAuditKey(audit_key(1)))
        .await
        .unwrap();
    assert!(
        matches!(s.apply(retire(1)).await, Err(StoreError::InUse(_))),
        "the audit signing key uses it"
    );
    let ak = WrappedId::AuditSigningKey {
        key_id: "k1".into(),
        public_key: vec![7; 32],
    };
    s.apply(rewrap(&ak, 1, 2, 7)).await.unwrap();
    assert!(
        matches!(s.apply(retire(2)).await, Err(StoreError::InUse(_))),
        "the current version"
    );
    assert_eq!(s.apply(retire(5)).await.unwrap_err(), StoreError::NotFound);
    s.apply(retire(1)).await.unwrap();
    assert_eq!(
        versions(&c).await,
        [(2, "other-seal".into()), (2, "test-fixture".into())]
    );
    assert_eq!(
        s.apply(retire(1)).await.unwrap_err(),
        StoreError::NotFound,
        "retired already"
    );
}

pub async fn keep_only_seal_never_loses_a_version(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    s.apply(kek(2, "test-fixture")).await.unwrap();
    s.apply(kek(2, "new-seal")).await.unwrap();
    let keep = |seal: &str| Mutation::KeepOnlySeal { keep: seal.into() };
    assert_eq!(
        s.apply(keep("missing")).await.unwrap_err(),
        StoreError::NotFound,
        "never deletes the whole keyring"
    );
    assert!(
        matches!(s.apply(keep("new-seal")).await, Err(StoreError::InUse(_))),
        "version 1 has no row under new-seal"
    );
    assert_eq!(versions(&c).await.len(), 3);
    s.apply(kek(1, "new-seal")).await.unwrap();
    s.apply(keep("new-seal")).await.unwrap();
    assert_eq!(
        versions(&c).await,
        [(1, "new-seal".into()), (2, "new-seal".into())]
    );
    s.apply(keep("new-seal")).await.unwrap();
    assert_eq!(
        versions(&c).await.len(),
        2,
        "keeping what is kept changes nothing"
    );
}
