//! Conformance cases for deposits: compare-and-set puts, delete and purge, listing and
//! pagination, ACL swaps, and puts racing from two handles.

use super::*;

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
    assert_eq!(
        s.list_shared(std::slice::from_ref(&group))
            .await
            .unwrap()
            .len(),
        1
    );
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
