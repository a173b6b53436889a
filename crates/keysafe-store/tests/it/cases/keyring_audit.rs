//! Conformance cases for the keyring (re-wrap, retire, seal migration) and the audit trail
//! (entries committed with their writes, one chain across two writers, signing key,
//! checkpoints).

use super::*;

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
