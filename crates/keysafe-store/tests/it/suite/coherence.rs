//! Reads of a deposit's current version see every committed change at once, whichever handle
//! on the database (another node, another process) made it, however often the version was read
//! before: a backend may keep current versions in memory, but never serves one a change has
//! replaced.

use super::*;
use keysafe_core::store::{DepositRecord, ReadMemo, WrappedId};
use keysafe_proto::api::Access;

/// Reads the current version through every handle, twice (the second read is the one a cache
/// would answer), and checks each with `check`.
async fn read_everywhere(
    handles: &[&Arc<dyn Store>],
    k: &DepositKey,
    check: impl Fn(Option<&(DepositRecord, VersionRecord, ReadMemo)>),
) {
    for s in handles {
        for _ in 0..2 {
            check(s.get_version(k, None).await.unwrap().as_deref());
        }
    }
}

pub async fn the_current_version_is_read_fresh_after_every_change(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let other = c.open_again().await;
    let both = [&c.store, &other];
    let k = key('a', "k");
    c.put(&k, None, 1, b"one").await.unwrap();
    read_everywhere(&both, &k, |r| {
        assert_eq!(r.unwrap().1.ciphertext, b"one");
    })
    .await;

    // A new version through the other handle.
    other
        .apply(Mutation::PutVersion {
            org: org(),
            key: k.clone(),
            expected_current: Some(ver(1)),
            expected_acl_serial: None,
            version: version(2, b"two"),
        })
        .await
        .unwrap();
    read_everywhere(&both, &k, |r| {
        let (d, v, _) = r.unwrap();
        assert_eq!((d.current_version, v.meta.version), (ver(2), ver(2)));
        assert_eq!(v.ciphertext, b"two");
    })
    .await;

    // Soft-deleted through this handle, restored through the other.
    for (s, deleted) in [(&c.store, true), (&other, false)] {
        s.apply(Mutation::SetDeleted {
            key: k.clone(),
            deleted,
            at: ts(50),
        })
        .await
        .unwrap();
        read_everywhere(&both, &k, |r| assert_eq!(r.unwrap().0.deleted, deleted)).await;
    }

    // A grant (the ACL serial moves) and the current version re-encrypted with it.
    other
        .apply(set_acl(
            &k,
            2,
            0,
            vec![grant('b', Access::Read, 60)],
            vec![version(2, b"two, for b too")],
        ))
        .await
        .unwrap();
    read_everywhere(&both, &k, |r| {
        let (d, v, _) = r.unwrap();
        assert_eq!(d.acl_serial, 1);
        assert_eq!(v.ciphertext, b"two, for b too");
    })
    .await;

    // The data key re-wrapped under a new keyring version.
    c.store.apply(kek(2, "test-fixture")).await.unwrap();
    c.store
        .apply(Mutation::Rewrap {
            id: WrappedId::DepositVersion {
                org: org(),
                key: k.clone(),
                version: ver(2),
            },
            expected_kek: 1,
            kek_version: 2,
            wrapped: vec![7; 60],
        })
        .await
        .unwrap();
    read_everywhere(&both, &k, |r| {
        let v = &r.unwrap().1;
        assert_eq!(
            (v.kek_version, v.wrapped_dek.as_slice()),
            (2, &[7u8; 60][..])
        );
    })
    .await;

    // Rows edited behind the store's back (the test kit announces its writes as keysafe's
    // writers do).
    let mut raw = c.raw().await;
    raw.execute(
        "UPDATE deposit_versions SET ciphertext = ?1 WHERE owner = ?2 AND name = ?3 AND version = 2",
        &[
            b"edited".as_slice().into(),
            k.owner.stored().into(),
            k.name.as_str().into(),
        ],
    )
    .await
    .unwrap();
    read_everywhere(&both, &k, |r| {
        assert_eq!(r.unwrap().1.ciphertext, b"edited")
    })
    .await;

    // Purged through the other handle: gone for both.
    other
        .apply(Mutation::Purge { key: k.clone() })
        .await
        .unwrap();
    read_everywhere(&both, &k, |r| assert!(r.is_none())).await;
}
