//! The audit chain: appends with and without changes, all-or-nothing failures, the head,
//! checkpoints and the signing key, verified with `keysafe_proto::audit::verify` over what the
//! store returns. Also the admin role's health and counts.

use super::*;
use keysafe_core::store::{AuditHead, AuditKeyRecord};
use keysafe_proto::audit::{AuditCheckpoint, AuditEvent};

fn event(target: &str, time: i64) -> AuditEvent {
    AuditEvent {
        time,
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

pub async fn audit_appends_chain_and_verify(b: &dyn TestBackend) {
    let mut c = Ctx::empty(b).await;
    assert_eq!(c.store.audit_head(), AuditHead::genesis());
    // A real keyring and signing key, so the checkpoints verify as `audit verify` checks them.
    let dir = tempfile::tempdir().unwrap();
    let seal = keysafe_core::FileSeal::create(&dir.path().join("root.key")).unwrap();
    let (ring, record) = keysafe_core::Keyring::generate(Arc::new(seal), ts(1)).unwrap();
    c.store.apply(Mutation::InsertKek(record)).await.unwrap();
    let signer = keysafe_core::audit::AuditSigner::load_or_create(c.store.as_ref(), &ring, ts(1))
        .await
        .unwrap();
    c.store.apply(create_org("acme")).await.unwrap();

    // Changes with their entries, and batches of 70 entries alone, interleaved.
    let mut expected = Vec::new();
    for i in 0..3 {
        let e = event(&format!("/write/{i}"), 10 + i);
        c.store
            .apply_audited(
                insert(client_record(
                    fp(['a', 'b', 'c'][i as usize]),
                    "acme",
                    ts(1),
                )),
                Some(e.clone()),
            )
            .await
            .unwrap();
        expected.push(e);
        let batch: Vec<AuditEvent> = (0..70)
            .map(|j| event(&format!("/read/{i}/{j}"), 20 + i))
            .collect();
        c.store.append_audit(batch.clone()).await.unwrap();
        expected.extend(batch);
    }
    c.store.append_audit(vec![]).await.unwrap();
    let head = c.store.audit_head();
    assert_eq!(head.seq, expected.len() as u64);
    let cp = signer.sign(head.seq, &head.hash, ts(99));
    c.store
        .apply(Mutation::InsertAuditCheckpoint(cp.clone()))
        .await
        .unwrap();

    let entries = c.store.audit_entries(1, None, 10_000).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        expected,
        "in the order appended"
    );
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=expected.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(entries.last().unwrap().hash, head.hash);
    let checkpoints = c.store.audit_checkpoints(0).await.unwrap();
    assert_eq!(checkpoints, [cp]);
    let report = keysafe_proto::audit::verify(&entries, &checkpoints, signer.public_key(), None);
    assert_eq!(report.broken, None, "{report:?}");
    assert_eq!(report.signed_up_to, Some(head.seq));

    // Reads: from, since, limit.
    let page = c.store.audit_entries(5, None, 3).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6, 7]);
    let since = c
        .store
        .audit_entries(1, Some(ts(22)), 10_000)
        .await
        .unwrap();
    assert_eq!(since.len(), 70, "the last batch only");
    assert!(since.iter().all(|e| e.event.time == 22));
    assert!(
        c.store
            .audit_entries(head.seq + 1, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A reopened store starts from the stored head, and the chain goes on from it.
    c.reopen().await;
    assert_eq!(c.store.audit_head(), head);
    c.store
        .append_audit(vec![event("/after", 30)])
        .await
        .unwrap();
    let all = c.store.audit_entries(1, None, 10_000).await.unwrap();
    assert_eq!(all.last().unwrap().prev_hash, head.hash);
    let report = keysafe_proto::audit::verify(&all, &checkpoints, signer.public_key(), None);
    assert_eq!(report.broken, None, "{report:?}");
}

/// Writes with their entries, batches of entries, and failures in between (a change that
/// fails, an entry whose insert fails): the chain holds exactly the committed ones, in one
/// unbroken order, and a change whose entry failed is not there either.
pub async fn audit_entries_commit_with_their_writes_and_failures_leave_no_hole(
    b: &dyn TestBackend,
) {
    let mut c = Ctx::new(b).await;
    b.refuse_audit_target(&mut c.raw().await, "/refused").await;
    // Submitted together so that they share group-commit batches.
    let mut tasks = Vec::new();
    for (i, target) in ["/ok1", "/refused", "/dup", "/ok2"].into_iter().enumerate() {
        let s = c.store.clone();
        tasks.push(tokio::spawn(async move {
            let f = match target {
                "/dup" => 'a',
                _ => ['c', 'd', 'e', 'f'][i],
            };
            s.apply_audited(
                insert(client_record(fp(f), "acme", ts(2))),
                Some(event(target, 1)),
            )
            .await
        }));
    }
    let batch = c.store.clone();
    tasks.push(tokio::spawn(async move {
        batch
            .append_audit(vec![event("/r1", 1), event("/r2", 1)])
            .await
            .map(|_| Applied::Done)
            .map_err(|e| e.error)
    }));
    let results = join_all(tasks).await;
    assert!(results[0].is_ok());
    assert!(
        matches!(results[1], Err(StoreError::Unavailable(_))),
        "{results:?}"
    );
    assert_eq!(results[2], Err(StoreError::AlreadyExists));
    assert!(results[3].is_ok() && results[4].is_ok());
    // The client whose entry was refused does not exist.
    assert!(c.store.get_client(&fp('d')).await.unwrap().is_none());
    assert!(c.store.get_client(&fp('c')).await.unwrap().is_some());
    let entries = c.store.audit_entries(1, None, 100).await.unwrap();
    let mut targets: Vec<_> = entries.iter().map(|e| e.event.target.as_str()).collect();
    targets.sort();
    assert_eq!(targets, ["/ok1", "/ok2", "/r1", "/r2"]);
    let report = keysafe_proto::audit::verify(&entries, &[], &[0u8; 32], None);
    assert_eq!(report.broken, None, "{report:?}");
    assert_eq!(
        c.store.audit_head(),
        AuditHead {
            seq: 4,
            hash: entries.last().unwrap().hash.clone()
        },
        "the head in memory is the committed one"
    );
    c.reopen().await;
    assert_eq!(c.store.audit_head().seq, 4);
}

pub async fn audit_append_failure_hands_the_entries_back(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    b.refuse_audit_target(&mut c.raw().await, "/refused").await;
    c.store
        .append_audit(vec![event("/first", 1)])
        .await
        .unwrap();
    let head = c.store.audit_head();
    // A long batch too, whose refused entry falls inside a multi-row insert.
    let long: Vec<AuditEvent> = (0..40)
        .map(|i| event(if i == 10 { "/refused" } else { "/long" }, 2))
        .collect();
    let err = c.store.append_audit(long.clone()).await.unwrap_err();
    assert!(matches!(err.error, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(err.events, long);
    assert_eq!(c.store.audit_head(), head, "all or nothing");
    assert_eq!(c.store.audit_entries(1, None, 100).await.unwrap().len(), 1);
    let batch = vec![event("/r1", 2), event("/refused", 2), event("/r2", 2)];
    let err = c.store.append_audit(batch.clone()).await.unwrap_err();
    assert!(matches!(err.error, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(err.events, batch, "the same entries, for a retry");
    assert_eq!(c.store.audit_head(), head, "all or nothing");
    assert_eq!(c.store.audit_entries(1, None, 100).await.unwrap().len(), 1);
    // A retry without the refused entry goes on from the same head.
    let retry: Vec<AuditEvent> = err
        .events
        .into_iter()
        .filter(|e| e.target != "/refused")
        .collect();
    c.store.append_audit(retry).await.unwrap();
    let entries = c.store.audit_entries(1, None, 100).await.unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[1].prev_hash, head.hash);
}

pub async fn audit_signing_key_and_checkpoints(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    assert!(s.audit_signing_key().await.unwrap().is_none());
    let key = AuditKeyRecord {
        key_id: "first".into(),
        public_key: vec![1; 32],
        kek_version: 1,
        wrapped: vec![2; 60],
        created_at: ts(4),
    };
    s.apply(Mutation::InsertAuditKey(key.clone()))
        .await
        .unwrap();
    let mut second = key.clone();
    second.key_id = "second".into();
    assert_eq!(
        s.apply(Mutation::InsertAuditKey(second)).await.unwrap_err(),
        StoreError::AlreadyExists,
        "one signing key, whatever its id"
    );
    assert_eq!(s.audit_signing_key().await.unwrap(), Some(key));

    let cp = |seq: u64, sig: &str| AuditCheckpoint {
        seq,
        hash: format!("h{seq}"),
        signed_at: 5,
        key_id: "first".into(),
        signature: sig.into(),
    };
    for seq in [7, 3] {
        s.apply(Mutation::InsertAuditCheckpoint(cp(seq, "s")))
            .await
            .unwrap();
    }
    s.apply(Mutation::InsertAuditCheckpoint(cp(7, "other")))
        .await
        .unwrap();
    assert_eq!(
        s.audit_checkpoints(0).await.unwrap(),
        [cp(3, "s"), cp(7, "s")],
        "ascending; the first checkpoint of a seq is kept"
    );
    assert_eq!(s.audit_checkpoints(4).await.unwrap(), [cp(7, "s")]);
    assert!(s.audit_checkpoints(8).await.unwrap().is_empty());
}

/// `PruneAudit`: only through a stored checkpoint, never the head; deletes exactly the entries
/// up to it, keeps every checkpoint, and later appends go on from the head as before.
pub async fn audit_prune_contract(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    let events: Vec<AuditEvent> = (0..10).map(|i| event(&format!("/e/{i}"), 30 + i)).collect();
    s.append_audit(events).await.unwrap();
    let head = s.audit_head();
    assert!(head.seq >= 10);
    let all = s.audit_entries(1, None, 1000).await.unwrap();
    let at = |seq: u64| all.iter().find(|e| e.seq == seq).unwrap().clone();
    let cp = |seq: u64| AuditCheckpoint {
        seq,
        hash: at(seq).hash,
        signed_at: 5,
        key_id: "k".into(),
        signature: "s".into(),
    };
    for seq in [4, head.seq] {
        s.apply(Mutation::InsertAuditCheckpoint(cp(seq)))
            .await
            .unwrap();
    }
    // Not a checkpoint: NotFound, nothing deleted.
    assert_eq!(
        s.apply(Mutation::PruneAudit { through: 3 })
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    // The head is never pruned, even at a checkpoint.
    assert!(matches!(
        s.apply(Mutation::PruneAudit { through: head.seq })
            .await
            .unwrap_err(),
        StoreError::InUse(_)
    ));
    assert_eq!(s.audit_entries(1, None, 1000).await.unwrap(), all);

    assert_eq!(
        s.apply(Mutation::PruneAudit { through: 4 }).await.unwrap(),
        Applied::Pruned(4)
    );
    let left = s.audit_entries(1, None, 1000).await.unwrap();
    assert_eq!(left.first().map(|e| e.seq), Some(5));
    assert_eq!(left, all[4..].to_vec());
    assert_eq!(
        s.audit_checkpoints(0).await.unwrap(),
        [cp(4), cp(head.seq)],
        "checkpoints stay: the one pruned through is the anchor"
    );
    // Pruned again through the same checkpoint: nothing left to delete.
    assert_eq!(
        s.apply(Mutation::PruneAudit { through: 4 }).await.unwrap(),
        Applied::Pruned(0)
    );
    // Appends go on from the head; the chain from the anchor verifies as a range.
    s.append_audit(vec![event("/after", 50)]).await.unwrap();
    let left = s.audit_entries(1, None, 1000).await.unwrap();
    assert_eq!(left.last().unwrap().seq, head.seq + 1);
    assert_eq!(left[0].prev_hash, cp(4).hash);
    let report = keysafe_proto::audit::verify(&left, &[], &[0u8; 32], Some(5));
    assert!(report.broken.is_none(), "{report:?}");
}

/// `open` finds only a store `create` made; `create` refuses one that exists and leaves it as
/// it was.
pub async fn create_and_open_guard_existence(b: &dyn TestBackend) {
    let (config, _guard) = b.fresh_config().await;
    assert_eq!(
        keysafe_store::open(&config).await.err(),
        Some(StoreError::NotFound),
        "nothing to open yet"
    );
    let s = keysafe_store::create(&config).await.unwrap();
    s.apply(create_org("acme")).await.unwrap();
    assert_eq!(
        keysafe_store::create(&config).await.err(),
        Some(StoreError::AlreadyExists)
    );
    let again = keysafe_store::open(&config).await.unwrap();
    again.ping().await.unwrap();
    assert!(again.get_org(&org()).await.unwrap().is_some());
}

pub async fn ping_and_stats(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    s.ping().await.unwrap();
    let mut pending = client_record(fp('c'), "acme", ts(1));
    pending.state = ClientState::Pending;
    s.apply(insert(pending)).await.unwrap();
    c.put(&key('a', "x"), None, 1, b"1").await.unwrap();
    c.put(&key('a', "x"), Some(1), 2, b"2").await.unwrap();
    c.put(&key('a', "y"), None, 1, b"1").await.unwrap();
    s.apply(Mutation::SetDeleted {
        key: key('a', "y"),
        deleted: true,
        at: ts(2),
    })
    .await
    .unwrap();
    let st = s.stats().await.unwrap();
    assert_eq!(
        st.clients_by_state,
        [(ClientState::Active, 2), (ClientState::Pending, 1)]
    );
    assert_eq!((st.deposits, st.deposit_versions), (2, 3));
    assert!(st.pool_idle <= st.pool_size);
}

/// Two handles on one database (two `keysafe serve` processes over one data directory, or two
/// nodes over one PostgreSQL), each with concurrent writers that append to the audit chain with
/// their changes and in batches: nothing fails (each writer reads the chain's head under the
/// right to append, so two writers never give two entries one sequence number) and the one
/// chain both wrote verifies.
pub async fn two_handles_append_to_one_chain_without_failures(b: &dyn TestBackend) {
    const WRITERS: usize = 6;
    const ROUNDS: usize = 40;
    let c = Ctx::new(b).await;
    let stores: [Arc<dyn Store>; 2] = [c.store.clone(), c.open_again().await];
    let mut tasks = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        for w in 0..WRITERS {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..ROUNDS {
                    let name = format!("s{n}/w{w}/k{i}");
                    let put = s
                        .apply_audited(
                            Mutation::PutVersion {
                                org: org(),
                                key: key('a', &name),
                                expected_current: None,
                                expected_acl_serial: None,
                                version: version(1, name.as_bytes()),
                            },
                            Some(event(&format!("/put/{name}"), 1)),
                        )
                        .await;
                    if let Err(e) = put {
                        failures.push(format!("put {name}: {e}"));
                    }
                    let reads = vec![
                        event(&format!("/get/{name}"), 1),
                        event(&format!("/ls/{name}"), 1),
                    ];
                    if let Err(e) = s.append_audit(reads).await {
                        failures.push(format!("append {name}: {}", e.error));
                    }
                }
                failures
            }));
        }
    }
    let failures: Vec<String> = join_all(tasks).await.into_iter().flatten().collect();
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let total = (2 * WRITERS * ROUNDS * 3) as u64;
    let entries = stores[0].audit_entries(1, None, 100_000).await.unwrap();
    assert_eq!(entries.len() as u64, total);
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "numbered without gaps"
    );
    let report = keysafe_proto::audit::verify(&entries, &[], &[0u8; 32], None);
    assert_eq!(report.broken, None, "{report:?}");
    // Each handle's head is one the chain went through, and the later one is the last entry.
    let heads = [stores[0].audit_head(), stores[1].audit_head()];
    for h in &heads {
        assert_eq!(entries[h.seq as usize - 1].hash, h.hash);
    }
    assert_eq!(heads.iter().map(|h| h.seq).max(), Some(total));
    // After one more append each, both heads are the chain's end as it was then.
    for s in &stores {
        s.append_audit(vec![event("/last", 2)]).await.unwrap();
    }
    let last = stores[0].audit_entries(total + 2, None, 10).await.unwrap();
    assert_eq!(stores[1].audit_head().hash, last[0].hash);
    assert_eq!(stores[0].audit_head().seq, total + 1);
    let owner = Principal::Client(fp('a'));
    let listed = stores[1]
        .list_deposits(keysafe_core::store::DepositListing {
            owner: &owner,
            prefix: "s",
            after: None,
            limit: 10_000,
            include_deleted: false,
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 2 * WRITERS * ROUNDS);
}
