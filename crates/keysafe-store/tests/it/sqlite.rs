//! What only the SQLite backend has: its durability settings, readers on their own
//! connections while the writer thread commits, and its cache of current versions.

use futures_util::StreamExt;
use keysafe_core::store::{AdminStore, AuditHead, AuditStore, IdentityStore};
use keysafe_proto::OrgName;
use keysafe_proto::audit::{AuditEvent, entry_hash};
use keysafe_store::sqlite::SqliteStore;
use std::sync::Arc;

/// WAL, `synchronous=FULL` (an acknowledged write survives power loss) and `secure_delete`
/// (purged ciphertext does not linger in free pages).
#[tokio::test]
async fn settings_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::create(&dir.path().join("x.db")).await.unwrap();
    assert_eq!(
        s.durability_settings().await.unwrap(),
        ("wal".to_owned(), 2, 1)
    );
}

fn event(batch: usize, i: usize) -> AuditEvent {
    AuditEvent {
        time: 1_700_000_000_000,
        node: "n1".into(),
        request_id: format!("r-{batch}-{i}"),
        remote: "127.0.0.1:1".into(),
        client: None,
        org: None,
        operation: "GET /v1/health".into(),
        target: "/v1/health".into(),
        version: None,
        outcome: "ok".into(),
    }
}

const BATCHES: usize = 30;
const PER_BATCH: usize = 200;

/// Appends `BATCHES` audit batches of `PER_BATCH` entries, one after the other.
fn append_batches(s: Arc<SqliteStore>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for b in 0..BATCHES {
            let events = (0..PER_BATCH).map(|i| event(b, i)).collect();
            s.append_audit(events).await.unwrap();
        }
    })
}

/// Checks that `entries` are the chain from its start: consecutive, each hash chaining onto the
/// one before, and whole batches only.
fn assert_whole_chain(entries: &[keysafe_proto::audit::AuditEntry]) {
    assert_eq!(
        entries.len() % PER_BATCH,
        0,
        "a reader saw part of an audit batch"
    );
    let mut prev = AuditHead::genesis().hash;
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, u64::try_from(i).unwrap() + 1);
        assert_eq!(e.prev_hash, prev);
        assert_eq!(e.hash, entry_hash(e.seq, &e.prev_hash, &e.event));
        prev = e.hash.clone();
    }
}

/// Readers (point reads on the calling thread, the trail on the blocking pool) go on while the
/// writer thread commits audit batches: no read fails or waits for the writer, and every read of
/// the trail sees whole committed batches whose hashes chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_whole_audit_batches_while_the_writer_commits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStore::create(&dir.path().join("x.db")).await.unwrap());
    let writer = append_batches(s.clone());
    let nobody = OrgName::parse("nobody").unwrap();
    let mut reads = 0;
    loop {
        let done = writer.is_finished();
        let entries = s.audit_entries(1, None, u32::MAX).await.unwrap();
        assert_whole_chain(&entries);
        assert!(s.get_org(&nobody).await.unwrap().is_none());
        s.ping().await.unwrap();
        reads += 1;
        if done {
            assert_eq!(entries.len(), BATCHES * PER_BATCH);
            break;
        }
    }
    writer.await.unwrap();
    assert!(reads > 0);
}

/// An export reads one snapshot on a thread of the blocking pool while the writer commits audit
/// batches: it holds whole batches only, and a consumer that stops early stops the export
/// without holding up the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_while_the_writer_commits_audit_batches() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStore::create(&dir.path().join("x.db")).await.unwrap());
    s.append_audit((0..PER_BATCH).map(|i| event(BATCHES, i)).collect())
        .await
        .unwrap();
    // A consumer that reads one record and walks away.
    let mut abandoned = s.export().await.unwrap();
    assert!(abandoned.next().await.is_some());
    drop(abandoned);
    let writer = append_batches(s.clone());
    loop {
        let done = writer.is_finished();
        let mut stream = s.export().await.unwrap();
        let mut entries = Vec::new();
        while let Some(r) = stream.next().await {
            let r = r.unwrap();
            if r.kind().name == keysafe_core::store::export::AUDIT_LOG {
                entries.push(r);
            }
        }
        assert_eq!(
            entries.len() % PER_BATCH,
            0,
            "an export saw part of an audit batch"
        );
        if done {
            assert_eq!(entries.len(), (BATCHES + 1) * PER_BATCH);
            break;
        }
    }
    writer.await.unwrap();
}

/// A new store at `path` with one deposit, `k` of client `a`, at version 1 holding `one`.
async fn one_deposit(path: &std::path::Path) -> (SqliteStore, keysafe_core::store::DepositKey) {
    use crate::suite::{client_record, create_org, fp, insert, kek, key, org, ts, version};
    use keysafe_core::store::{Mutation, Store};
    let s = SqliteStore::create(path).await.unwrap();
    s.apply(create_org("acme")).await.unwrap();
    s.apply(insert(client_record(fp('a'), "acme", ts(1))))
        .await
        .unwrap();
    s.apply(kek(1, "test-fixture")).await.unwrap();
    let k = key('a', "k");
    s.apply(Mutation::PutVersion {
        org: org(),
        key: k.clone(),
        expected_current: None,
        expected_acl_serial: None,
        version: version(1, b"one"),
    })
    .await
    .unwrap();
    (s, k)
}

/// A store that cannot open its change epoch (here a directory stands in its place; in practice
/// a file owned by another user) does not open: it could neither keep a cache coherent nor
/// announce its own writes to the other processes on the file. The error names the file.
#[tokio::test]
async fn a_store_whose_change_epoch_cannot_be_opened_does_not_open() {
    use keysafe_core::store::DepositStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let (s, k) = one_deposit(&path).await;
    drop(s);
    let epoch = dir.path().join("x.db-epoch");
    std::fs::remove_file(&epoch).unwrap();
    std::fs::create_dir(&epoch).unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err().to_string();
    assert!(
        err.contains("change epoch") && err.contains("x.db-epoch"),
        "{err}"
    );
    // With the file back, the store opens and its data is whole.
    std::fs::remove_dir(&epoch).unwrap();
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        s.get_version(&k, None).await.unwrap().unwrap().1.ciphertext,
        b"one"
    );
}

/// Current versions are served from memory: an edit of the file that no keysafe writer
/// announced (an intruder's) is not seen while the cached entry is young, and is seen once the
/// entry is older than its bound (five seconds). Announced changes are seen at once (the suite's
/// `the_current_version_is_read_fresh_after_every_change`).
#[tokio::test]
async fn an_unannounced_edit_is_seen_once_the_cached_version_is_past_its_bound() {
    use keysafe_core::store::DepositStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let (s, k) = one_deposit(&path).await;
    let intruder = rusqlite::Connection::open(&path).unwrap();
    intruder
        .busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let current = || async {
        s.get_version(&k, None)
            .await
            .unwrap()
            .unwrap()
            .1
            .ciphertext
            .clone()
    };

    assert_eq!(current().await, b"one");
    assert_eq!(s.cached_versions(), 1);
    let edited = intruder
        .execute(
            "UPDATE deposit_versions SET ciphertext = x'65646974' WHERE name = 'k'",
            [],
        )
        .unwrap();
    assert_eq!(edited, 1);
    assert_eq!(current().await, b"one", "served from memory");
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    assert_eq!(current().await, b"edit");
}

/// This process's write to one deposit keeps every other cached deposit served and its own
/// row cached as committed (so the next put finds the header it checks in memory); another
/// process's write empties the cache, and each store then reads what the other committed.
#[tokio::test]
async fn a_write_replaces_only_its_deposit_in_the_cache_and_another_processs_empties_it() {
    use crate::suite::{key, org, version};
    use keysafe_core::store::{DepositStore, Mutation, Store};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let (s, a) = one_deposit(&path).await;
    let b = key('a', "other");
    let put = |k: &keysafe_core::store::DepositKey, v: u64, payload: &[u8]| Mutation::PutVersion {
        org: org(),
        key: k.clone(),
        expected_current: keysafe_proto::DepositVersion::new(v - 1).ok(),
        expected_acl_serial: None,
        version: version(v, payload),
    };
    s.apply(put(&b, 1, b"b1")).await.unwrap();
    assert_eq!(current(&s, &a).await, b"one");
    assert_eq!(current(&s, &b).await, b"b1");
    assert_eq!(s.cached_versions(), 2);

    s.apply(put(&a, 2, b"two")).await.unwrap();
    assert_eq!(s.cached_versions(), 2, "b stays cached, a is replaced");
    assert_eq!(current(&s, &a).await, b"two");
    let head = s.get_deposit(&a).await.unwrap().unwrap();
    assert_eq!((head.current_version.get(), head.newest_version), (2, 2));
    assert_eq!(current(&s, &b).await, b"b1");

    // A second process on the same file writes b, then a.
    let other = SqliteStore::open(&path).await.unwrap();
    assert_eq!(current(&other, &b).await, b"b1");
    other.apply(put(&b, 2, b"b2")).await.unwrap();
    assert_eq!(current(&s, &b).await, b"b2");
    assert_eq!(current(&s, &a).await, b"two");
    other.apply(put(&a, 3, b"three")).await.unwrap();
    assert_eq!(current(&s, &a).await, b"three");
    assert_eq!(
        s.get_deposit(&a)
            .await
            .unwrap()
            .unwrap()
            .current_version
            .get(),
        3
    );
    // And this process's next write is seen by the other.
    s.apply(put(&b, 3, b"b3")).await.unwrap();
    assert_eq!(current(&other, &b).await, b"b3");

    // A put of a payload over the bound is dropped from the cache rather than read back.
    assert_eq!(current(&s, &a).await, b"three");
    assert_eq!(s.cached_versions(), 2);
    let large = vec![7u8; 64 * 1024 + 1];
    s.apply(put(&b, 4, &large)).await.unwrap();
    assert_eq!(s.cached_versions(), 1, "a stays, b goes");
    assert_eq!(current(&s, &b).await, large);
}

async fn current(s: &SqliteStore, k: &keysafe_core::store::DepositKey) -> Vec<u8> {
    use keysafe_core::store::DepositStore;
    s.get_version(k, None)
        .await
        .unwrap()
        .unwrap()
        .1
        .ciphertext
        .clone()
}
