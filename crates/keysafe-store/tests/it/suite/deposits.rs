//! Deposits: compare-and-set puts, soft delete, purge, reads, listing and pagination.

use super::*;
use keysafe_core::store::{DepositListing, DepositRecord};

pub async fn put_is_compare_and_set(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let k = key('a', "k");
    c.put(&k, None, 1, b"one").await.unwrap();
    assert_eq!(
        c.put(&k, None, 1, b"again").await.unwrap_err(),
        StoreError::VersionConflict {
            current: Some(ver(1))
        }
    );
    assert_eq!(
        c.put(&k, Some(2), 3, b"skip").await.unwrap_err(),
        StoreError::VersionConflict {
            current: Some(ver(1))
        }
    );
    assert_eq!(
        c.put(&key('a', "new"), Some(1), 2, b"x").await.unwrap_err(),
        StoreError::VersionConflict { current: None },
        "expecting a version of a deposit that does not exist"
    );
    c.put(&k, Some(1), 2, b"two").await.unwrap();
    let (d, v, _) =
        std::sync::Arc::unwrap_or_clone(c.store.get_version(&k, None).await.unwrap().unwrap());
    assert_eq!(d.current_version, ver(2));
    assert_eq!(d.current_size, 3);
    assert_eq!(d.org, org());
    assert_eq!(d.created_at, ts(1_001));
    assert_eq!(d.updated_at, ts(1_002));
    assert!(!d.deleted);
    assert_eq!(v, version(2, b"two"));
    // The number is the caller's: one already stored is refused, and nothing changes.
    assert_eq!(
        c.put(&k, Some(2), 1, b"dup").await.unwrap_err(),
        StoreError::AlreadyExists
    );
    assert_eq!(
        c.store
            .get_deposit(&k)
            .await
            .unwrap()
            .unwrap()
            .current_version,
        ver(2)
    );
    // The ACL serial, when named, must not have moved.
    let with_serial = |serial| Mutation::PutVersion {
        org: org(),
        key: k.clone(),
        expected_current: Some(ver(2)),
        expected_acl_serial: Some(serial),
        version: version(3, b"three"),
    };
    assert_eq!(
        c.store.apply(with_serial(7)).await.unwrap_err(),
        StoreError::VersionConflict {
            current: Some(ver(2))
        }
    );
    c.store.apply(with_serial(0)).await.unwrap();
    // Another owner's same name is a different deposit.
    assert!(c.store.get_deposit(&key('b', "k")).await.unwrap().is_none());
    c.put(&key('b', "k"), None, 1, b"b's").await.unwrap();
    assert_eq!(c.store.list_versions(&k).await.unwrap().len(), 3);
}

/// Changes queued through one handle apply in the order queued: versions queued behind
/// their predecessors before any of them committed all commit, and a failed one fails every
/// version queued behind it, with what is current.
pub async fn queued_writes_apply_in_order(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let k = key('a', "hot");
    let submit = |expected: Option<u64>, n: u64| {
        c.store.submit_audited(
            Mutation::PutVersion {
                org: org(),
                key: k.clone(),
                expected_current: expected.map(ver),
                expected_acl_serial: None,
                version: version(n, b"v"),
            },
            None,
        )
    };
    // Queued, none awaited: each expects the one before it, which is not stored yet.
    let mut queued = Vec::new();
    for n in 1..=20 {
        queued.push(submit((n > 1).then(|| n - 1), n).await.unwrap());
    }
    for q in queued {
        q.await.unwrap();
    }
    assert_eq!(
        c.store
            .get_deposit(&k)
            .await
            .unwrap()
            .unwrap()
            .current_version,
        ver(20)
    );
    // The head of a queue fails (it expects a version that is not current): what was queued
    // behind it fails with what is stored, and nothing changes.
    let first = submit(Some(7), 21).await.unwrap();
    let second = submit(Some(21), 22).await.unwrap();
    let conflict = StoreError::VersionConflict {
        current: Some(ver(20)),
    };
    assert_eq!(first.await.unwrap_err(), conflict);
    assert_eq!(second.await.unwrap_err(), conflict);
    assert_eq!(c.store.list_versions(&k).await.unwrap().len(), 20);
}

pub async fn put_needs_an_existing_keyring_version(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let mut v = version(1, b"y");
    v.kek_version = 2;
    let err = c
        .store
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
    assert!(
        c.store
            .get_deposit(&key('a', "new"))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn deleted_deposits_refuse_versions_and_purge_removes_everything(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    let k = key('a', "k");
    c.put(&k, None, 1, b"one").await.unwrap();
    c.put(&k, Some(1), 2, b"two").await.unwrap();
    let delete = |deleted, at| Mutation::SetDeleted {
        key: k.clone(),
        deleted,
        at: ts(at),
    };
    s.apply(delete(true, 9)).await.unwrap();
    s.apply(delete(true, 10)).await.unwrap();
    let d = s.get_deposit(&k).await.unwrap().unwrap();
    assert!(d.deleted);
    assert_eq!(d.updated_at, ts(10));
    assert_eq!(
        c.put(&k, Some(2), 3, b"x").await.unwrap_err(),
        StoreError::Deleted
    );
    assert_eq!(
        c.put(&k, Some(1), 3, b"x").await.unwrap_err(),
        StoreError::Deleted,
        "deleted is checked before the version"
    );
    // Still readable as a record (the service decides what a deleted deposit shows).
    assert!(s.get_version(&k, None).await.unwrap().is_some());
    s.apply(delete(false, 11)).await.unwrap();
    c.put(&k, Some(2), 3, b"three").await.unwrap();
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
    assert_eq!(
        s.apply(Mutation::Purge { key: k.clone() }).await.unwrap(),
        Applied::Purged(3)
    );
    assert!(s.get_deposit(&k).await.unwrap().is_none());
    assert!(s.get_version(&k, Some(ver(1))).await.unwrap().is_none());
    assert!(s.list_versions(&k).await.unwrap().is_empty());
    assert!(s.get_grants(&k).await.unwrap().is_empty());
    assert_eq!(
        s.apply(Mutation::Purge { key: k.clone() })
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    // The name is free again, from version 1.
    c.put(&k, None, 1, b"again").await.unwrap();
}

pub async fn reads_of_versions_and_missing_deposits(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    let k = key('a', "k");
    assert!(s.get_deposit(&k).await.unwrap().is_none());
    assert!(s.get_version(&k, None).await.unwrap().is_none());
    assert!(s.list_versions(&k).await.unwrap().is_empty());
    assert!(s.get_grants(&k).await.unwrap().is_empty());
    for n in 1..=3u64 {
        c.put(&k, (n > 1).then(|| n - 1), n, &vec![n as u8; n as usize])
            .await
            .unwrap();
    }
    let (d, v1, _) =
        std::sync::Arc::unwrap_or_clone(s.get_version(&k, Some(ver(1))).await.unwrap().unwrap());
    assert_eq!(d.current_version, ver(3), "the header is the current one");
    assert_eq!(v1, version(1, &[1]));
    assert!(s.get_version(&k, Some(ver(4))).await.unwrap().is_none());
    let metas = s.list_versions(&k).await.unwrap();
    assert_eq!(
        metas.iter().map(|m| m.version).collect::<Vec<_>>(),
        [ver(1), ver(2), ver(3)]
    );
    assert_eq!(metas[1], version(2, &[2, 2]).meta);
}

fn names(rows: Vec<DepositRecord>) -> Vec<String> {
    rows.into_iter().map(|r| r.name.to_string()).collect()
}

async fn list(
    c: &Ctx,
    owner: char,
    prefix: &str,
    after: Option<&str>,
    limit: u32,
    include_deleted: bool,
) -> Vec<String> {
    let owner = Principal::Client(fp(owner));
    names(
        c.store
            .list_deposits(DepositListing {
                owner: &owner,
                prefix,
                after,
                limit,
                include_deleted,
            })
            .await
            .unwrap(),
    )
}

/// Every page of `limit`, following `after` from page to page.
async fn all_pages(c: &Ctx, prefix: &str, limit: u32) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let page = list(c, 'a', prefix, out.last().map(String::as_str), limit, false).await;
        assert!(page.len() <= limit as usize);
        let done = page.len() < limit as usize;
        out.extend(page);
        if done {
            return out;
        }
    }
}

pub async fn listing_respects_prefix_boundaries_order_and_pages(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    for n in ["a", "a/b", "a/c", "ab", "b", "a-z", "a.z", "a_z", "zzz"] {
        c.put(&key('a', n), None, 1, b"x").await.unwrap();
    }
    c.put(&key('b', "a/secret"), None, 1, b"x").await.unwrap();
    c.store
        .apply(Mutation::SetDeleted {
            key: key('a', "a/c"),
            deleted: true,
            at: ts(3),
        })
        .await
        .unwrap();
    assert_eq!(list(&c, 'a', "a/", None, 100, false).await, ["a/b"]);
    assert_eq!(list(&c, 'a', "a/", None, 100, true).await, ["a/b", "a/c"]);
    assert_eq!(
        list(&c, 'a', "a", None, 100, false).await,
        ["a", "a-z", "a.z", "a/b", "a_z", "ab"]
    );
    assert_eq!(list(&c, 'a', "", None, 2, false).await, ["a", "a-z"]);
    assert_eq!(
        list(&c, 'a', "", Some("a_z"), 100, false).await,
        ["ab", "b", "zzz"]
    );
    assert_eq!(
        list(&c, 'a', "a", Some("a/b"), 100, false).await,
        ["a_z", "ab"],
        "after and prefix together"
    );
    assert!(list(&c, 'a', "nothing", None, 100, true).await.is_empty());
    assert!(list(&c, 'a', "", Some("zzz"), 100, true).await.is_empty());
    // `_` and `%` in a prefix are characters, not LIKE's wildcards.
    assert_eq!(list(&c, 'a', "a_", None, 100, true).await, ["a_z"]);
    for prefix in ["a%", "%", "_", "a_b"] {
        assert!(
            list(&c, 'a', prefix, None, 100, true).await.is_empty(),
            "{prefix}"
        );
    }
    assert_eq!(
        all_pages(&c, "", 2).await,
        list(&c, 'a', "", None, 100, false).await,
        "pages of 2 add up to the whole listing"
    );
}

/// Names whose byte order differs from any locale's (case, punctuation, digits): the listing,
/// its prefixes and its pages follow bytes.
pub async fn listing_orders_by_bytes_not_by_locale(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let names_in_byte_order = [
        "-x", "0", "9/z", "A", "A/b", "B", "Z_", "_a", "a", "a-B", "a.b", "aB", "a_", "ab", "b",
        "z",
    ];
    // Written in another order, so insertion order proves nothing.
    for n in names_in_byte_order.iter().rev() {
        c.put(&key('a', n), None, 1, b"x").await.unwrap();
    }
    assert_eq!(
        list(&c, 'a', "", None, 100, false).await,
        names_in_byte_order
    );
    assert_eq!(all_pages(&c, "", 3).await, names_in_byte_order);
    assert_eq!(list(&c, 'a', "A", None, 100, false).await, ["A", "A/b"]);
    assert_eq!(
        list(&c, 'a', "a", None, 100, false).await,
        ["a", "a-B", "a.b", "aB", "a_", "ab"]
    );
    assert_eq!(
        list(&c, 'a', "", Some("Z_"), 3, false).await,
        ["_a", "a", "a-B"]
    );
}

pub async fn many_concurrent_writes_commit_and_survive_reopening(b: &dyn TestBackend) {
    let mut c = Ctx::new(b).await;
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let s = c.store.clone();
        tasks.push(tokio::spawn(async move {
            // Every tenth write is doomed (wrong expected version) and must fail alone.
            let expected = if i % 10 == 0 { Some(ver(5)) } else { None };
            s.apply(Mutation::PutVersion {
                org: org(),
                key: key('a', &format!("k{i}")),
                expected_current: expected,
                expected_acl_serial: None,
                version: version(1, &i.to_be_bytes()),
            })
            .await
        }));
    }
    let mut ok = 0;
    for (i, r) in join_all(tasks).await.into_iter().enumerate() {
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(i % 10, 0, "write {i} failed: {e}");
                assert_eq!(e, StoreError::VersionConflict { current: None });
            }
        }
    }
    assert_eq!(ok, 270);
    // Seen at once by another handle (another node), and after reopening.
    let other = c.open_again().await;
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
    other.close().await;
    c.reopen().await;
    assert_eq!(list(&c, 'a', "k", None, 1000, true).await.len(), 270);
    let (_, v, _) = std::sync::Arc::unwrap_or_clone(
        c.store
            .get_version(&key('a', "k299"), None)
            .await
            .unwrap()
            .unwrap(),
    );
    assert_eq!(v.ciphertext, 299u32.to_be_bytes());
}

/// Rows that break the naming and format rules (a name with `..`, a fingerprint that is not
/// one, a token list that is not JSON), written behind the store's back: reads report them as
/// `Corrupt`, never guess at them.
pub async fn corrupt_rows_are_reported_not_decoded(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let mut raw = c.raw().await;
    raw.execute(
        "INSERT INTO deposits (owner, name, org, current_version, current_size, created_at, \
         updated_at) VALUES (?1, 'bad/../name', 'acme', 1, 1, 1, 1)",
        &[fp('a').as_str().into()],
    )
    .await
    .unwrap();
    raw.execute(
        "INSERT INTO clients (fingerprint, org, state, role, cert_der, token_recent, \
         created_at, updated_at) VALUES (?1, 'acme', 'active', 'client', ?2, '[{\"h\":', 1, 1)",
        &[fp('c').as_str().into(), vec![0u8].into()],
    )
    .await
    .unwrap();
    raw.execute(
        "INSERT INTO clients (fingerprint, org, state, role, cert_der, created_at, updated_at) \
         VALUES (?1, 'acme', 'active', 'client', ?2, 1, 1)",
        &["not-a-fingerprint".into(), vec![0u8].into()],
    )
    .await
    .unwrap();
    drop(raw);
    let owner = Principal::Client(fp('a'));
    let r = c
        .store
        .list_deposits(DepositListing {
            owner: &owner,
            prefix: "",
            after: None,
            limit: 10,
            include_deleted: true,
        })
        .await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
    let r = c.store.get_client(&fp('c')).await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
    let r = c.store.list_clients(None, None).await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
}
