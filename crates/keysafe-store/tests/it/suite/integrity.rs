//! Authenticated access rows (ADR 0013), as the store keeps them: with an authenticator
//! installed every write leaves a MAC that verifies, a write refuses a row edited behind its
//! back (and changes nothing), a sealed store refuses changes of authenticated rows, and the
//! back-fill runs once. The rows are edited with raw SQL, as an intruder with database access
//! would.

use super::groups::{add, create, group, remove, wk};
use super::sharing::{grant, set_acl};
use super::*;
use keysafe_core::integrity::RowMacKey;
use keysafe_core::store::{AccessRow, RowAuth, RowAuthMode, RowAuthenticator};
use keysafe_store::testing::RawValue;

fn mac_key() -> Arc<dyn RowAuthenticator> {
    Arc::new(RowMacKey::derive(&keysafe_core::crypto::SecretKey::generate().unwrap()).unwrap())
}

/// The client's row as stored verifies under `auth`.
async fn client_verifies(s: &dyn Store, auth: &Arc<dyn RowAuthenticator>, f: char) -> bool {
    let rec = s.get_client(&fp(f)).await.unwrap().unwrap();
    rec.mac
        .as_deref()
        .is_some_and(|m| auth.verify(&AccessRow::client(&rec), m))
}

pub async fn writes_keep_client_macs_and_refuse_edited_rows(b: &dyn TestBackend) {
    let c = Ctx::empty(b).await;
    let s = c.store.as_ref();
    let auth = mac_key();
    s.row_auth().set(RowAuthMode::On(auth.clone()));
    s.apply(create_org("acme")).await.unwrap();
    for f in ['a', 'b', 'c'] {
        s.apply(insert(client_record(fp(f), "acme", ts(1))))
            .await
            .unwrap();
        assert!(client_verifies(s, &auth, f).await);
    }
    // Every change of an access field leaves a MAC over the new values.
    s.apply(Mutation::SetClientRole {
        fingerprint: fp('a'),
        role: ClientRole::Admin,
        at: ts(2),
    })
    .await
    .unwrap();
    s.apply(Mutation::SetClientState {
        fingerprint: fp('b'),
        state: ClientState::Disabled,
        at: ts(2),
    })
    .await
    .unwrap();
    s.apply(Mutation::MarkSuspectedClone {
        fingerprint: fp('c'),
        reason: "x".into(),
        at: ts(2),
    })
    .await
    .unwrap();
    s.apply(Mutation::ResetToken {
        fingerprint: fp('c'),
        at: ts(3),
    })
    .await
    .unwrap();
    for f in ['a', 'b', 'c'] {
        assert!(client_verifies(s, &auth, f).await, "{f}");
    }

    // An intruder re-enables the disabled client: the next write to it is refused and
    // changes nothing, and its row does not verify.
    let mut raw = c.raw().await;
    raw.execute(
        "UPDATE clients SET state = 'active' WHERE fingerprint = ?1",
        &[fp('b').as_str().into()],
    )
    .await
    .unwrap();
    assert!(!client_verifies(s, &auth, 'b').await);
    let err = s
        .apply(Mutation::SetClientRole {
            fingerprint: fp('b'),
            role: ClientRole::Admin,
            at: ts(4),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let b_now = s.get_client(&fp('b')).await.unwrap().unwrap();
    assert_eq!(b_now.role, ClientRole::Client);

    // A row whose MAC was removed is refused the same way.
    raw.execute(
        "UPDATE clients SET mac = NULL WHERE fingerprint = ?1",
        &[fp('a').as_str().into()],
    )
    .await
    .unwrap();
    let err = s
        .apply(Mutation::SetClientState {
            fingerprint: fp('a'),
            state: ClientState::Disabled,
            at: ts(4),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");

    // The bulk disable verifies its candidates first: one edited candidate refuses it all.
    s.apply(insert(client_record(fp('d'), "acme", ts(1))))
        .await
        .unwrap();
    raw.execute(
        "UPDATE clients SET recipient = 'age1intruder' WHERE fingerprint = ?1",
        &[fp('d').as_str().into()],
    )
    .await
    .unwrap();
    let err = s
        .apply(Mutation::DisableUnactivated {
            registered_before: ts(10),
            at: ts(10),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert_eq!(
        s.get_client(&fp('d')).await.unwrap().unwrap().state,
        ClientState::Active
    );

    // The offline recovery (run with the seal) repairs a row without verifying it first.
    s.apply(Mutation::RecoverAdmin {
        fingerprint: fp('a'),
        at: ts(5),
    })
    .await
    .unwrap();
    assert!(client_verifies(s, &auth, 'a').await);
}

pub async fn a_sealed_store_refuses_changes_of_authenticated_rows(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = c.store.as_ref();
    s.row_auth().set(RowAuthMode::Sealed);
    for m in [
        insert(client_record(fp('c'), "acme", ts(1))),
        Mutation::SetClientRole {
            fingerprint: fp('a'),
            role: ClientRole::Admin,
            at: ts(2),
        },
        Mutation::SetClientState {
            fingerprint: fp('a'),
            state: ClientState::Disabled,
            at: ts(2),
        },
        Mutation::RecoverAdmin {
            fingerprint: fp('a'),
            at: ts(2),
        },
    ] {
        assert_eq!(s.apply(m).await.unwrap_err(), StoreError::Sealed);
    }
    let a = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!((a.state, a.role), (ClientState::Active, ClientRole::Client));
    assert!(s.get_client(&fp('c')).await.unwrap().is_none());
    // What changes no authenticated row goes on.
    s.apply(create_org("other")).await.unwrap();
}

pub async fn the_backfill_runs_once_and_refuses_a_removed_record(b: &dyn TestBackend) {
    // Rows written without MACs (as before the upgrade).
    let c = Ctx::new(b).await;
    let s = c.store.as_ref();
    assert!(s.get_client(&fp('a')).await.unwrap().unwrap().mac.is_none());
    let auth = mac_key();
    let backfill = || Mutation::BackfillRowMacs {
        auth: RowAuth(auth.clone()),
        at: ts(9),
    };
    assert_eq!(s.apply(backfill()).await.unwrap(), Applied::Backfilled(2));
    assert!(client_verifies(s, &auth, 'a').await);
    assert!(client_verifies(s, &auth, 'b').await);
    let mut raw = c.raw().await;
    let marker = raw
        .query("SELECT completed_at, mac FROM row_macs_backfill", &[])
        .await
        .unwrap();
    assert_eq!(marker.len(), 1);
    assert_eq!(marker[0][0], RawValue::Int(9));
    assert!(auth.verify(
        &AccessRow::BackfillCompleted { at: ts(9) },
        marker[0][1].as_blob().unwrap()
    ));
    // Once only: a row stripped of its MAC later is not given one again.
    raw.execute(
        "UPDATE clients SET mac = NULL WHERE fingerprint = ?1",
        &[fp('a').as_str().into()],
    )
    .await
    .unwrap();
    assert_eq!(s.apply(backfill()).await.unwrap(), Applied::Backfilled(0));
    assert!(!client_verifies(s, &auth, 'a').await);
    // Removing the record while rows carry MACs does not start it again.
    raw.execute("DELETE FROM row_macs_backfill", &[])
        .await
        .unwrap();
    assert_eq!(s.apply(backfill()).await.unwrap_err(), StoreError::Conflict);
    assert!(!client_verifies(s, &auth, 'a').await);
}

/// The deposit header as stored verifies under `auth`.
async fn head_verifies(s: &dyn Store, auth: &Arc<dyn RowAuthenticator>, k: &DepositKey) -> bool {
    let d = s.get_deposit(k).await.unwrap().unwrap();
    d.mac
        .as_deref()
        .is_some_and(|m| auth.verify(&AccessRow::deposit(&d), m))
}

pub async fn writes_keep_deposit_and_grant_macs_and_refuse_edited_rows(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = c.store.as_ref();
    let auth = mac_key();
    s.row_auth().set(RowAuthMode::On(auth.clone()));
    let k = super::key('a', "k");
    c.put(&k, None, 1, b"one").await.unwrap();
    assert!(head_verifies(s, &auth, &k).await);
    c.put(&k, Some(1), 2, b"two").await.unwrap();
    s.apply(set_acl(
        &k,
        2,
        0,
        vec![grant('b', keysafe_proto::api::Access::Read, 5)],
        vec![],
    ))
    .await
    .unwrap();
    let d = s.get_deposit(&k).await.unwrap().unwrap();
    assert_eq!(
        (d.current_version.get(), d.acl_serial, d.newest_version),
        (2, 1, 2)
    );
    assert!(head_verifies(s, &auth, &k).await);
    let grants = s.get_grants(&k).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert!(auth.verify(
        &AccessRow::grant(&k, &grants[0]),
        grants[0].mac.as_deref().unwrap()
    ));

    // An intruder turns the read grant into a write grant: it no longer verifies.
    let mut raw = c.raw().await;
    raw.execute(
        "UPDATE deposit_grants SET access = 'write' WHERE grantee = ?1",
        &[fp('b').as_str().into()],
    )
    .await
    .unwrap();
    let g = &s.get_grants(&k).await.unwrap()[0];
    assert!(!auth.verify(&AccessRow::grant(&k, g), g.mac.as_deref().unwrap()));

    // Rolling the header back to version 1: the header fails, and the newest version shows it.
    raw.execute(
        "UPDATE deposits SET current_version = 1 WHERE name = 'k'",
        &[],
    )
    .await
    .unwrap();
    assert!(!head_verifies(s, &auth, &k).await);
    assert_eq!(s.get_deposit(&k).await.unwrap().unwrap().newest_version, 2);
    // ... and a write to it is refused, changing nothing.
    let err = c.put(&k, Some(1), 2, b"again").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    raw.execute(
        "UPDATE deposits SET current_version = 2 WHERE name = 'k'",
        &[],
    )
    .await
    .unwrap();
    assert!(head_verifies(s, &auth, &k).await);

    // An edited ACL serial refuses the next ACL change.
    raw.execute("UPDATE deposits SET acl_serial = 0 WHERE name = 'k'", &[])
        .await
        .unwrap();
    let err = s
        .apply(set_acl(&k, 2, 0, vec![], vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    raw.execute("UPDATE deposits SET acl_serial = 1 WHERE name = 'k'", &[])
        .await
        .unwrap();

    // Deleting a grantee bumps the serial of every deposit that granted to it, re-authenticated.
    s.apply(Mutation::DeleteClient {
        fingerprint: fp('b'),
        at: ts(9),
    })
    .await
    .unwrap();
    let d = s.get_deposit(&k).await.unwrap().unwrap();
    assert_eq!(d.acl_serial, 2);
    assert!(head_verifies(s, &auth, &k).await);
    // Soft-deleting and restoring keep the header authenticated.
    for deleted in [true, false] {
        s.apply(Mutation::SetDeleted {
            key: k.clone(),
            deleted,
            at: ts(10),
        })
        .await
        .unwrap();
        assert!(head_verifies(s, &auth, &k).await);
    }
}

/// Every membership and epoch row of the group verifies under `auth`.
async fn group_verifies(s: &dyn Store, auth: &Arc<dyn RowAuthenticator>, name: &str) -> bool {
    let g = s.get_group(&org(), &group(name)).await.unwrap().unwrap();
    let members = g.members.iter().all(|m| {
        let row = AccessRow::GroupMember {
            org: g.org.clone(),
            name: g.name.clone(),
            member: m.fingerprint.clone(),
        };
        m.mac.as_deref().is_some_and(|mac| auth.verify(&row, mac))
    });
    let epochs = g.epochs.iter().zip(&g.epoch_macs).all(|((e, r), mac)| {
        let row = AccessRow::GroupEpoch {
            org: g.org.clone(),
            name: g.name.clone(),
            epoch: *e,
            recipient: r.clone(),
        };
        mac.as_deref().is_some_and(|mac| auth.verify(&row, mac))
    });
    members && epochs && g.epochs.len() == g.epoch_macs.len()
}

pub async fn writes_keep_group_macs_and_edits_do_not_verify(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = c.store.as_ref();
    s.apply(insert(client_record(fp('c'), "acme", ts(1))))
        .await
        .unwrap();
    let auth = mac_key();
    s.row_auth().set(RowAuthMode::On(auth.clone()));
    s.apply(create("acme", "ops", &['a', 'b'])).await.unwrap();
    assert!(group_verifies(s, &auth, "ops").await);
    s.apply(add("ops", 'c', 30)).await.unwrap();
    s.apply(remove("ops", 'b', 1, vec![wk(2, 'a')]))
        .await
        .unwrap();
    assert!(group_verifies(s, &auth, "ops").await);
    let g = s.get_group(&org(), &group("ops")).await.unwrap().unwrap();
    assert_eq!(g.epoch, 2);
    let mine = s.member_groups(&org(), &fp('c')).await.unwrap();
    assert!(auth.verify(
        &AccessRow::GroupMember {
            org: org(),
            name: group("ops"),
            member: fp('c'),
        },
        mine[0].mac.as_deref().unwrap()
    ));

    // An intruder changes the newest epoch's recipient: that row no longer verifies.
    let mut raw = c.raw().await;
    raw.execute(
        "UPDATE group_epochs SET recipient = 'age1intruder' WHERE name = 'ops' AND epoch = 2",
        &[],
    )
    .await
    .unwrap();
    assert!(!group_verifies(s, &auth, "ops").await);
}
