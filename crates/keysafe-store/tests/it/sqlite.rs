//! What only the SQLite backend has: its durability settings, file snapshots for backups,
//! several handles (processes) over one file, and rows edited behind its back.

use crate::suite::{client_record, create_org, fp, insert, kek, key, org, ts, ver, version};
use keysafe_core::store::{DepositListing, Mutation, Store, StoreError};
use keysafe_proto::Principal;
use keysafe_proto::audit::AuditEvent;
use keysafe_store::sqlite::SqliteStore;
use keysafe_store::{StorageConfig, snapshot};
use std::path::Path;
use std::sync::Arc;

fn config(dir: &Path, file: &str) -> StorageConfig {
    let settings: keysafe_store::StorageSettings =
        toml::from_str(&format!("url = \"sqlite:{file}\"")).unwrap();
    StorageConfig::from_settings(&settings, dir).unwrap()
}

#[tokio::test]
async fn create_and_open_guard_existence_and_settings_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let cfg = config(dir.path(), "x.db");
    assert_eq!(
        keysafe_store::open(&cfg).await.err(),
        Some(StoreError::NotFound)
    );
    let s = SqliteStore::create(&path).await.unwrap();
    assert_eq!(
        s.durability_settings().await.unwrap(),
        ("wal".to_owned(), 2, 1)
    );
    assert_eq!(
        keysafe_store::create(&cfg).await.err(),
        Some(StoreError::AlreadyExists)
    );
    keysafe_store::open(&cfg)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_urls_are_refused_until_built_in() {
    let settings: keysafe_store::StorageSettings =
        toml::from_str("url = \"postgres://ks@127.0.0.1/keysafe\"").unwrap();
    let cfg = StorageConfig::from_settings(&settings, Path::new("/d")).unwrap();
    for r in [
        keysafe_store::open(&cfg).await.err(),
        keysafe_store::create(&cfg).await.err(),
    ] {
        match r {
            Some(StoreError::Unsupported(m)) => {
                assert!(m.contains("not built into this keysafe yet"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        snapshot::take(&cfg, &dir.path().join("s")).await,
        Err(StoreError::Unsupported(_))
    ));
}

#[tokio::test]
async fn snapshots_copy_the_whole_store_and_install_where_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "live.db");
    let s = keysafe_store::create(&cfg).await.unwrap();
    s.apply(create_org("acme")).await.unwrap();
    s.apply(insert(client_record(fp('a'), "acme", ts(1))))
        .await
        .unwrap();
    s.apply(kek(1, "file")).await.unwrap();
    s.apply(Mutation::PutVersion {
        org: org(),
        key: key('a', "snap"),
        expected_current: None,
        expected_acl_serial: None,
        version: version(1, b"payload"),
    })
    .await
    .unwrap();
    let dest = dir.path().join("snap.db");
    snapshot::take(&cfg, &dest).await.unwrap();
    assert_eq!(
        snapshot::take(&cfg, &dest).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    let copy = snapshot::open(&dest).await.unwrap();
    let (_, v) = copy
        .get_version(&key('a', "snap"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.ciphertext, b"payload");
    assert_eq!(
        copy.load_keks().await.unwrap(),
        s.load_keks().await.unwrap()
    );
    copy.close().await;

    // Installed where another configuration keeps its data (a subdirectory here), privately.
    let bytes = std::fs::read(&dest).unwrap();
    let target = config(dir.path(), "restored/keysafe.db");
    snapshot::install(&target, &bytes).await.unwrap();
    assert_eq!(
        snapshot::install(&target, &bytes).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("restored/keysafe.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
    let restored = keysafe_store::open(&target).await.unwrap();
    assert_eq!(
        restored
            .get_deposit(&key('a', "snap"))
            .await
            .unwrap()
            .unwrap()
            .current_version,
        ver(1)
    );
}

fn event(target: String) -> AuditEvent {
    AuditEvent {
        time: 1,
        node: "n".into(),
        request_id: target.clone(),
        remote: "127.0.0.1:1".into(),
        client: None,
        org: None,
        operation: "PUT /x".into(),
        target,
        version: None,
        outcome: "ok".into(),
    }
}

/// Two stores over one file (as two `keysafe serve` processes over one data directory), each
/// with concurrent writers that append to the audit chain with their changes and in batches:
/// nothing fails (each writer reads the chain's head under the write lock, so two writers never
/// give two entries one sequence number) and the one chain both wrote verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_file_append_to_one_chain_without_failures() {
    const WRITERS: usize = 6;
    const ROUNDS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "shared.db");
    let first = keysafe_store::create(&cfg).await.unwrap();
    first.apply(create_org("acme")).await.unwrap();
    first
        .apply(insert(client_record(fp('a'), "acme", ts(1))))
        .await
        .unwrap();
    first.apply(kek(1, "file")).await.unwrap();
    let second = keysafe_store::open(&cfg).await.unwrap();
    let stores: [Arc<dyn Store>; 2] = [first, second];
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
                            Some(event(format!("/put/{name}"))),
                        )
                        .await;
                    if let Err(e) = put {
                        failures.push(format!("put {name}: {e}"));
                    }
                    let reads = vec![event(format!("/get/{name}")), event(format!("/ls/{name}"))];
                    if let Err(e) = s.append_audit(reads).await {
                        failures.push(format!("append {name}: {}", e.error));
                    }
                }
                failures
            }));
        }
    }
    let failures: Vec<String> = crate::suite::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let total = (2 * WRITERS * ROUNDS * 3) as u64;
    let entries = stores[0].audit_entries(1, None, 100_000).await.unwrap();
    assert_eq!(entries.len() as u64, total);
    let report = keysafe_proto::audit::verify(&entries, &[], &[0u8; 32], None);
    assert_eq!(report.broken, None, "{report:?}");
    // Each handle's head is one the chain went through, and the later one is the last entry.
    let heads = [stores[0].audit_head(), stores[1].audit_head()];
    for h in &heads {
        assert_eq!(entries[h.seq as usize - 1].hash, h.hash);
    }
    assert_eq!(heads.iter().map(|h| h.seq).max(), Some(total));
    let owner = Principal::Client(fp('a'));
    let listed = stores[1]
        .list_deposits(DepositListing {
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

#[tokio::test]
async fn corrupt_rows_are_reported_not_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "c.db");
    keysafe_store::create(&cfg).await.unwrap().close().await;
    // Rows that break the naming rules, written behind the store's back.
    let mut raw = keysafe_store::testing::RawDb::connect(&cfg).await.unwrap();
    for sql in [
        "INSERT INTO orgs VALUES ('acme', '[]', 'approval', NULL, 1, 1)",
        "INSERT INTO clients (fingerprint, org, name, state, role, cert_der, created_at, updated_at) VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'acme', NULL, 'active', 'client', x'00', 1, 1)",
        "INSERT INTO deposits (owner, name, org, current_version, current_size, deleted, created_at, updated_at) VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'bad/../name', 'acme', 1, 1, 0, 1, 1)",
        "INSERT INTO clients (fingerprint, org, name, state, role, cert_der, token_recent, created_at, updated_at) VALUES ('bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 'acme', NULL, 'active', 'client', x'00', '[{\"h\":', 1, 1)",
    ] {
        raw.execute(sql, &[]).await.unwrap();
    }
    drop(raw);
    let s = keysafe_store::open(&cfg).await.unwrap();
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
    let r = s.get_client(&fp('b')).await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
}
