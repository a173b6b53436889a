//! The storage suite: `Store` semantics against a real SQLite file. Written against the trait,
//! so the PostgreSQL backend will run the same cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keysafe_core::store::{
    Applied, ClientRecord, DepositKey, DepositListing, KekRecord, KekUsage, Mutation, OrgRecord,
    Store, StoreError, TokenState, VersionMeta, VersionRecord, WrappedId, WrappedKind,
};
use keysafe_proto::api::{AuthMode, ClientRole, ClientState, Encoding};
use keysafe_proto::{
    ClientFingerprint, DepositName, DepositVersion, OrgName, Principal, Timestamp,
};
use keysafe_store::SqliteStore;
use std::sync::Arc;

mod cases;
mod postgres;
mod sqlite_cases;

fn fp(c: char) -> ClientFingerprint {
    ClientFingerprint::parse(&c.to_string().repeat(64)).unwrap()
}

fn ver(n: u64) -> DepositVersion {
    DepositVersion::new(n).unwrap()
}

fn client_record(
    fingerprint: ClientFingerprint,
    cert_der: Vec<u8>,
    now: Timestamp,
) -> ClientRecord {
    ClientRecord {
        fingerprint,
        org: org(),
        name: None,
        state: ClientState::Active,
        role: ClientRole::Client,
        cert_der,
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

fn org() -> OrgName {
    OrgName::parse("acme").unwrap()
}

fn key(owner: char, name: &str) -> DepositKey {
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
            created_at: Timestamp::from_unix_millis(1_000 + n as i64),
            creator: fp('a'),
            encoding: Encoding::Raw,
        },
        kek_version: 1,
        wrapped_dek: vec![9; 60],
        ciphertext: payload.to_vec(),
    }
}

async fn fresh() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::create(&dir.path().join("t.db")).await.unwrap();
    let now = Timestamp::from_unix_millis(1);
    store
        .apply(Mutation::CreateOrg(OrgRecord {
            name: org(),
            contacts: vec![],
            auth_mode: AuthMode::Secret,
            auth_hash: Some("$argon2id$x".into()),
            created_at: now,
            updated_at: now,
        }))
        .await
        .unwrap();
    for c in ['a', 'b'] {
        store
            .apply(insert(client_record(fp(c), vec![1, 2, 3], now)))
            .await
            .unwrap();
    }
    // Data keys must name an existing keyring version.
    store
        .apply(Mutation::InsertKek(KekRecord {
            version: 1,
            seal: "test-fixture".into(),
            wrapped: vec![0],
            created_at: now,
        }))
        .await
        .unwrap();
    (dir, Arc::new(store))
}

async fn put(
    s: &SqliteStore,
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

#[tokio::test]
async fn create_and_open_guard_existence_and_settings_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    assert_eq!(
        SqliteStore::open(&path).await.unwrap_err(),
        StoreError::NotFound
    );
    let s = SqliteStore::create(&path).await.unwrap();
    assert_eq!(
        s.durability_settings().await.unwrap(),
        ("wal".to_owned(), 2, 1)
    );
    s.ping().await.unwrap();
    assert_eq!(
        SqliteStore::create(&path).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    SqliteStore::open(&path).await.unwrap();
}

#[tokio::test]
async fn uniqueness_and_references() {
    let (_d, s) = fresh().await;
    let now = Timestamp::from_unix_millis(5);
    let dup_org = s
        .apply(Mutation::CreateOrg(OrgRecord {
            name: org(),
            contacts: vec![],
            auth_mode: AuthMode::Approval,
            auth_hash: None,
            created_at: now,
            updated_at: now,
        }))
        .await;
    assert_eq!(dup_org.unwrap_err(), StoreError::AlreadyExists);
    let mut c = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(
        s.apply(insert(c.clone())).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    c.fingerprint = fp('c');
    c.org = OrgName::parse("nowhere").unwrap();
    assert_eq!(s.apply(insert(c)).await.unwrap_err(), StoreError::NotFound);
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
    s.apply(Mutation::InsertKek(KekRecord {
        version: 1,
        seal: "file".into(),
        wrapped: vec![1],
        created_at: now,
    }))
    .await
    .unwrap();
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
    assert_eq!(s.load_keks().await.unwrap()[0].wrapped, vec![1]);
}

#[tokio::test]
async fn put_is_compare_and_set() {
    let (_d, s) = fresh().await;
    let k = key('a', "k");
    put(&s, &k, None, 1, b"one").await.unwrap();
    assert_eq!(
        put(&s, &k, None, 1, b"again").await.unwrap_err(),
        StoreError::VersionConflict {
            current: Some(ver(1))
        }
    );
    assert_eq!(
        put(&s, &k, Some(2), 3, b"skip").await.unwrap_err(),
        StoreError::VersionConflict {
            current: Some(ver(1))
        }
    );
    put(&s, &k, Some(1), 2, b"two").await.unwrap();
    let (d, v) = s.get_version(&k, None).await.unwrap().unwrap();
    assert_eq!(d.current_version, ver(2));
    assert_eq!(d.current_size, 3);
    assert_eq!(v.ciphertext, b"two");
    let (_, v1) = s.get_version(&k, Some(ver(1))).await.unwrap().unwrap();
    assert_eq!(v1.ciphertext, b"one");
    assert!(s.get_version(&k, Some(ver(3))).await.unwrap().is_none());
    // Another owner's same name is a different deposit.
    assert!(s.get_deposit(&key('b', "k")).await.unwrap().is_none());
    put(&s, &key('b', "k"), None, 1, b"b's").await.unwrap();
    assert_eq!(s.list_versions(&k).await.unwrap().len(), 2);
}

#[tokio::test]
async fn deleted_deposits_refuse_versions_and_purge_removes_everything() {
    let (_d, s) = fresh().await;
    let k = key('a', "k");
    put(&s, &k, None, 1, b"one").await.unwrap();
    let at = Timestamp::from_unix_millis(9);
    s.apply(Mutation::SetDeleted {
        key: k.clone(),
        deleted: true,
        at,
    })
    .await
    .unwrap();
    assert_eq!(
        put(&s, &k, Some(1), 2, b"x").await.unwrap_err(),
        StoreError::Deleted
    );
    assert!(s.get_deposit(&k).await.unwrap().unwrap().deleted);
    assert_eq!(
        s.apply(Mutation::SetDeleted {
            key: key('a', "nope"),
            deleted: true,
            at
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        s.apply(Mutation::Purge { key: k.clone() }).await.unwrap(),
        Applied::Purged(1)
    );
    assert!(s.get_deposit(&k).await.unwrap().is_none());
    assert!(s.list_versions(&k).await.unwrap().is_empty());
    assert_eq!(
        s.apply(Mutation::Purge { key: k }).await.unwrap_err(),
        StoreError::NotFound
    );
}

#[tokio::test]
async fn listing_respects_prefix_boundaries_order_and_pages() {
    let (_d, s) = fresh().await;
    for n in ["a", "a/b", "a/c", "ab", "b", "a-z", "a.z", "a_z", "zzz"] {
        put(&s, &key('a', n), None, 1, b"x").await.unwrap();
    }
    put(&s, &key('b', "a/secret"), None, 1, b"x").await.unwrap();
    s.apply(Mutation::SetDeleted {
        key: key('a', "a/c"),
        deleted: true,
        at: Timestamp::from_unix_millis(3),
    })
    .await
    .unwrap();
    let owner = Principal::Client(fp('a'));
    let names = |rows: Vec<keysafe_core::store::DepositRecord>| {
        rows.into_iter()
            .map(|r| r.name.to_string())
            .collect::<Vec<_>>()
    };
    let q = |prefix: &'static str, after: Option<&'static str>, limit: u32, deleted: bool| {
        DepositListing {
            owner: &owner,
            prefix,
            after,
            limit,
            include_deleted: deleted,
        }
    };
    assert_eq!(
        names(s.list_deposits(q("a/", None, 100, false)).await.unwrap()),
        vec!["a/b"]
    );
    assert_eq!(
        names(s.list_deposits(q("a/", None, 100, true)).await.unwrap()),
        vec!["a/b", "a/c"]
    );
    assert_eq!(
        names(s.list_deposits(q("a", None, 100, false)).await.unwrap()),
        vec!["a", "a-z", "a.z", "a/b", "a_z", "ab"]
    );
    assert_eq!(
        names(s.list_deposits(q("", None, 2, false)).await.unwrap()),
        vec!["a", "a-z"]
    );
    assert_eq!(
        names(
            s.list_deposits(q("", Some("a_z"), 100, false))
                .await
                .unwrap()
        ),
        vec!["ab", "b", "zzz"]
    );
    assert!(
        s.list_deposits(q("nothing", None, 100, true))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn many_concurrent_writes_commit_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let s = Arc::new(SqliteStore::create(&path).await.unwrap());
    let now = Timestamp::from_unix_millis(1);
    s.apply(Mutation::CreateOrg(OrgRecord {
        name: org(),
        contacts: vec![],
        auth_mode: AuthMode::Approval,
        auth_hash: None,
        created_at: now,
        updated_at: now,
    }))
    .await
    .unwrap();
    s.apply(insert(client_record(fp('a'), vec![], now)))
        .await
        .unwrap();
    s.apply(kek(1, "file")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            // Every tenth write is doomed (wrong expected version) and must fail alone.
            let expected = if i % 10 == 0 { Some(5) } else { None };
            put(
                &s,
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
    drop(s);
    let reopened = SqliteStore::open(&path).await.unwrap();
    let owner = Principal::Client(fp('a'));
    let rows = reopened
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
}

#[tokio::test]
async fn corrupt_rows_are_reported_not_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let s = SqliteStore::create(&path).await.unwrap();
    drop(s);
    // Write a row with a name that breaks the naming rule, behind the store's back.
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    for sql in [
        "INSERT INTO orgs VALUES ('acme', '[]', 'approval', NULL, 1, 1)",
        "INSERT INTO clients (fingerprint, org, name, state, role, cert_der, created_at, updated_at) VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'acme', NULL, 'active', 'client', x'00', 1, 1)",
        "INSERT INTO deposits (owner, name, org, current_version, current_size, deleted, created_at, updated_at) VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'bad/../name', 'acme', 1, 1, 0, 1, 1)",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    drop(conn);
    let s = SqliteStore::open(&path).await.unwrap();
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

// --- Keyring rotation, re-wrap, retire, seal migration, snapshot (issue 5) ---

fn kek(v: u32, seal: &str) -> Mutation {
    Mutation::InsertKek(KekRecord {
        version: v,
        seal: seal.into(),
        wrapped: vec![v as u8],
        created_at: Timestamp::from_unix_millis(5),
    })
}

#[tokio::test]
async fn rewrap_is_compare_and_set_and_retire_refuses_used_versions() {
    let (_d, s) = fresh().await;
    for i in 0..5 {
        put(&s, &key('a', &format!("k{i}")), None, 1, b"x")
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
    assert!(matches!(&stale[0].id, WrappedId::DepositVersion { org: o, .. } if *o == org()));

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
    assert!(matches!(
        s.apply(Mutation::Rewrap {
            id: stale[0].id.clone(),
            expected_kek: 1,
            kek_version: 2,
            wrapped: vec![8; 60],
        })
        .await,
        Err(StoreError::VersionConflict { .. })
    ));
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
}

#[tokio::test]
async fn seal_migration_keeps_only_the_new_rows_and_snapshot_is_consistent() {
    let (d, s) = fresh().await;
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

    put(&s, &key('a', "snap"), None, 1, b"payload")
        .await
        .unwrap();
    let dest = d.path().join("snap.db");
    s.snapshot(&dest).await.unwrap();
    assert_eq!(
        s.snapshot(&dest).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    let copy = SqliteStore::open(&dest).await.unwrap();
    let (_, v) = copy
        .get_version(&key('a', "snap"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.ciphertext, b"payload");
    assert_eq!(copy.load_keks().await.unwrap(), keks);
}

// ---- audit trail (issue 6) ----

fn event(target: &str) -> keysafe_proto::audit::AuditEvent {
    keysafe_proto::audit::AuditEvent {
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

/// Writes with their entries, batches of entries, and failures in between (a change that
/// fails, an entry whose insert fails): the chain holds exactly the committed ones, in one
/// unbroken order, and a change whose entry failed is not there either.
#[tokio::test]
async fn audit_entries_commit_with_their_writes_and_failures_leave_no_hole() {
    let (dir, s) = fresh().await;
    let mut raw = {
        use sqlx::ConnectOptions;
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .connect()
            .await
            .unwrap()
    };
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.target = '/refused' \
         BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    let now = Timestamp::from_unix_millis(2);
    // Submitted together so that they share group-commit batches.
    let mut tasks = Vec::new();
    for (i, target) in ["/ok1", "/refused", "/dup", "/ok2"].into_iter().enumerate() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let c = match target {
                "/dup" => 'a',
                _ => ['c', 'd', 'e', 'f'][i],
            };
            s.apply_audited(
                insert(client_record(fp(c), vec![9], now)),
                Some(event(target)),
            )
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
    let results: Vec<_> = futures_join(tasks).await;
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(StoreError::Unavailable(_))));
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
    // A reopened store starts from the stored head.
    let path = dir.path().join("t.db");
    drop(s);
    let again = SqliteStore::open(&path).await.unwrap();
    assert_eq!(again.audit_head().0, 4);
}

async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
