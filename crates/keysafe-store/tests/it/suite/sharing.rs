//! ACLs: the grants-and-versions swap and its refusals, and the shared listing.

use super::*;
use keysafe_core::store::GrantRecord;
use keysafe_proto::api::Access;

pub fn grant(to: char, access: Access, at: i64) -> GrantRecord {
    GrantRecord {
        grantee: Principal::Client(fp(to)),
        access,
        granted_by: fp('a'),
        granted_at: ts(at),
        mac: None,
    }
}

pub fn set_acl(
    k: &DepositKey,
    current: u64,
    serial: u64,
    grants: Vec<GrantRecord>,
    replace: Vec<VersionRecord>,
) -> Mutation {
    Mutation::SetAcl {
        key: k.clone(),
        expected_current: ver(current),
        expected_acl_serial: serial,
        grants,
        replace,
        at: ts(77),
    }
}

fn reencrypted(n: u64, payload: &[u8]) -> VersionRecord {
    let mut v = version(n, payload);
    v.meta.encoding = Encoding::Age;
    v.wrapped_dek = vec![n as u8; 60];
    v
}

pub async fn acl_swap_replaces_grants_and_versions_together(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    let k = key('a', "shared");
    c.put(&k, None, 1, b"one").await.unwrap();
    c.put(&k, Some(1), 2, b"two").await.unwrap();
    s.apply(set_acl(
        &k,
        2,
        0,
        vec![grant('c', Access::Write, 5), grant('b', Access::Read, 5)],
        vec![reencrypted(1, b"ONE!"), reencrypted(2, b"TWO!!")],
    ))
    .await
    .unwrap();
    let d = s.get_deposit(&k).await.unwrap().unwrap();
    assert_eq!(d.acl_serial, 1);
    assert_eq!(d.current_size, 5, "the current version's new size");
    assert_eq!(d.updated_at, ts(77));
    // Grants by grant time, then grantee.
    assert_eq!(
        s.get_grants(&k).await.unwrap(),
        [grant('b', Access::Read, 5), grant('c', Access::Write, 5)]
    );
    for (n, payload) in [(1, &b"ONE!"[..]), (2, b"TWO!!")] {
        let (_, v, _) = std::sync::Arc::unwrap_or_clone(
            s.get_version(&k, Some(ver(n))).await.unwrap().unwrap(),
        );
        assert_eq!(v, reencrypted(n, payload));
    }
    // The next swap replaces the grants wholesale (here: none) and needs the new serial.
    s.apply(set_acl(&k, 2, 1, vec![], vec![])).await.unwrap();
    assert!(s.get_grants(&k).await.unwrap().is_empty());
    assert_eq!(s.get_deposit(&k).await.unwrap().unwrap().acl_serial, 2);
    // A put naming the old serial loses.
    assert_eq!(
        s.apply(Mutation::PutVersion {
            org: org(),
            key: k.clone(),
            expected_current: Some(ver(2)),
            expected_acl_serial: Some(1),
            version: version(3, b"x"),
        })
        .await
        .unwrap_err(),
        StoreError::VersionConflict {
            current: Some(ver(2))
        }
    );
}

pub async fn acl_swap_refusals(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    let k = key('a', "shared");
    c.put(&k, None, 1, b"one").await.unwrap();
    let unchanged = |c: &Ctx| {
        let s = c.store.clone();
        let k = k.clone();
        async move {
            let d = s.get_deposit(&k).await.unwrap().unwrap();
            let (_, v, _) = std::sync::Arc::unwrap_or_clone(
                s.get_version(&k, Some(ver(1))).await.unwrap().unwrap(),
            );
            (
                d.acl_serial,
                s.get_grants(&k).await.unwrap().len(),
                v.ciphertext,
            )
        }
    };
    let before = unchanged(&c).await;
    let cases = [
        (
            set_acl(&k, 2, 0, vec![grant('b', Access::Read, 1)], vec![]),
            StoreError::Conflict,
            "the current version moved",
        ),
        (
            set_acl(&k, 1, 5, vec![grant('b', Access::Read, 1)], vec![]),
            StoreError::Conflict,
            "the serial moved",
        ),
        (
            set_acl(
                &k,
                1,
                0,
                vec![grant('b', Access::Read, 1), grant('b', Access::Write, 2)],
                vec![],
            ),
            StoreError::AlreadyExists,
            "a repeated grantee",
        ),
        (
            set_acl(
                &k,
                1,
                0,
                vec![],
                vec![reencrypted(1, b"x"), reencrypted(4, b"y")],
            ),
            StoreError::NotFound,
            "a version that does not exist",
        ),
        (
            set_acl(&key('a', "missing"), 1, 0, vec![], vec![]),
            StoreError::NotFound,
            "no such deposit",
        ),
    ];
    for (m, want, why) in cases {
        assert_eq!(s.apply(m).await.unwrap_err(), want, "{why}");
        assert_eq!(unchanged(&c).await, before, "{why}: nothing changed");
    }
    let mut stale_kek = reencrypted(1, b"x");
    stale_kek.kek_version = 9;
    let e = s
        .apply(set_acl(&k, 1, 0, vec![], vec![stale_kek]))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert_eq!(unchanged(&c).await, before);
    s.apply(Mutation::SetDeleted {
        key: k.clone(),
        deleted: true,
        at: ts(3),
    })
    .await
    .unwrap();
    assert_eq!(
        s.apply(set_acl(&k, 1, 0, vec![], vec![]))
            .await
            .unwrap_err(),
        StoreError::Deleted
    );
}

pub async fn shared_listing_finds_grants_to_any_grantee(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    let group = Principal::parse_stored("group:acme/ops").unwrap();
    let group_grant = GrantRecord {
        grantee: group.clone(),
        access: Access::Write,
        granted_by: fp('b'),
        granted_at: ts(4),
        mac: None,
    };
    for (owner, name) in [('a', "x/2"), ('a', "x/1"), ('b', "y"), ('a', "gone")] {
        c.put(&key(owner, name), None, 1, b"v").await.unwrap();
    }
    s.apply(set_acl(
        &key('a', "x/2"),
        1,
        0,
        vec![grant('c', Access::Read, 3)],
        vec![],
    ))
    .await
    .unwrap();
    s.apply(set_acl(
        &key('a', "x/1"),
        1,
        0,
        vec![grant('c', Access::Read, 3), group_grant.clone()],
        vec![],
    ))
    .await
    .unwrap();
    s.apply(set_acl(
        &key('b', "y"),
        1,
        0,
        vec![group_grant.clone()],
        vec![],
    ))
    .await
    .unwrap();
    s.apply(set_acl(
        &key('a', "gone"),
        1,
        0,
        vec![grant('c', Access::Read, 3)],
        vec![],
    ))
    .await
    .unwrap();
    s.apply(Mutation::SetDeleted {
        key: key('a', "gone"),
        deleted: true,
        at: ts(5),
    })
    .await
    .unwrap();
    let found = s
        .list_shared(&[Principal::Client(fp('c')), group.clone()])
        .await
        .unwrap();
    let seen: Vec<(String, String, String)> = found
        .iter()
        .map(|(d, g)| (d.owner.stored(), d.name.to_string(), g.grantee.stored()))
        .collect();
    let a = fp('a').as_str().to_owned();
    let c_ = fp('c').as_str().to_owned();
    let b_ = fp('b').as_str().to_owned();
    assert_eq!(
        seen,
        [
            (a.clone(), "x/1".into(), c_.clone()),
            (a.clone(), "x/1".into(), group.stored()),
            (a.clone(), "x/2".into(), c_.clone()),
            (b_, "y".into(), group.stored()),
        ],
        "one entry per grant, by owner, name, grantee; deleted deposits left out"
    );
    assert_eq!(found[1].1, group_grant);
    assert!(s.list_shared(&[]).await.unwrap().is_empty());
    assert!(
        s.list_shared(&[Principal::Client(fp('e'))])
            .await
            .unwrap()
            .is_empty()
    );
}
