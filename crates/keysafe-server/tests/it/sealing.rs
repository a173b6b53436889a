//! Seals and keyring rotation, in process: the passphrase seal starts sealed and is
//! unsealed over the API; rotation keeps every deposit readable before, during and after the
//! re-wrap, across a restart; retirement only of unused versions.

use crate::assert_code;
use keysafe_client::client::Precondition;
use keysafe_core::service::rewrap::RewrapSettings;
use keysafe_proto::{DepositName, ErrorCode};
use keysafe_testkit::{TestServer, TestStorage};
use std::collections::BTreeMap;
use std::time::Duration;

const PASSPHRASE: &str = "correct horse battery staple";

fn name(s: &str) -> DepositName {
    DepositName::parse(s).unwrap()
}

async fn passphrase_seal_starts_sealed_and_unseals_over_the_api(storage: TestStorage) {
    let ts = TestServer::start_on_with_init(
        storage,
        |o| {
            o.seal.kind = "passphrase".into();
            o.passphrase = Some(zeroize::Zeroizing::new(PASSPHRASE.into()));
        },
        |_| {},
    )
    .await;
    // Started without a passphrase: sealed. Administration that changes no authenticated row
    // still works; registration, which writes one, waits for the unseal (ADR 0013).
    let h = ts.anonymous_client().health().await.unwrap();
    assert_eq!(h.status, "sealed");
    let raw = ts
        .anonymous_client()
        .raw_request(http::Method::GET, "/v1/health")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 503);
    let body: serde_json::Value = raw.json().await.unwrap();
    assert_eq!(body["status"], "sealed");
    assert!(body.get("seal").is_none());
    assert!(body["sealed_reason"].as_str().unwrap().contains("unseal"));

    let secret = ts.create_org("acme").await;
    assert_code(
        ts.register("acme", Some(secret.clone())).await.map(|_| ()),
        ErrorCode::Sealed,
    );
    // A wrong passphrase is refused and changes nothing.
    assert_code(
        ts.admin.unseal("not the passphrase").await,
        ErrorCode::Forbidden,
    );
    assert!(ts.service().is_sealed());
    let st = ts.admin.keyring_status().await.unwrap();
    assert!(st.sealed);
    ts.admin.unseal(PASSPHRASE).await.unwrap();
    let c = ts.register("acme", Some(secret)).await.unwrap();

    // Sealed again (as the seal check does when the seal's key goes away): deposits answer
    // `sealed`, and only administrators may unseal.
    ts.service().seal_now("sealed by the test");
    assert_code(
        c.client
            .put(&name("k"), b"v".to_vec(), Precondition::None)
            .await,
        ErrorCode::Sealed,
    );
    assert_code(c.client.get(&name("k"), None).await, ErrorCode::Sealed);
    assert_code(c.client.unseal(PASSPHRASE).await, ErrorCode::Forbidden);

    let st = ts.admin.unseal(PASSPHRASE).await.unwrap();
    assert!(!st.sealed);
    assert_eq!(st.seal.as_deref(), Some("passphrase"));
    let put = c
        .client
        .put(&name("k"), b"secret".to_vec(), Precondition::None)
        .await
        .unwrap();
    assert_eq!(put.version.get(), 1);
    assert_eq!(
        &c.client.get(&name("k"), None).await.unwrap().payload[..],
        b"secret"
    );
    let h = ts.anonymous_client().health().await.unwrap();
    assert_eq!(h.status, "ok");
    assert_eq!(h.seal.as_deref(), Some("passphrase"));
    // Unsealing twice is a state error, not a silent success.
    assert_code(ts.admin.unseal(PASSPHRASE).await, ErrorCode::InvalidState);
    // The salt lives with the keyring, and the key itself never does.
    let mut db = ts.raw_db().await;
    let seal = db.scalar("SELECT seal FROM keyring", &[]).await.unwrap();
    let seal = seal.as_text().unwrap();
    assert!(
        seal.starts_with("passphrase;argon2id;m=65536;t=3;p=1;salt="),
        "{seal}"
    );
    assert!(!ts.data_dir.join("root.key").exists());
}

async fn wait_rewrapped(ts: &TestServer) -> keysafe_proto::api::KeyringStatusInfo {
    for _ in 0..1200 {
        let s = ts.admin.keyring_status().await.unwrap();
        if s.rewrap_pending == 0 {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the re-wrap job never finished");
}

async fn rotation_keeps_every_deposit_readable_before_during_and_after(storage: TestStorage) {
    let ts = TestServer::start_on_with(storage, |c| {
        // Small, slow batches, so that writes and reads happen while the job is half-way.
        c.rewrap = RewrapSettings {
            batch: 5,
            pause: Duration::from_millis(30),
        };
    })
    .await;
    let c = ts.new_client("acme").await;
    let mut written: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..60 {
        let n = format!("before/{i}");
        let v = format!("payload {i}").into_bytes();
        c.client
            .put(&name(&n), v.clone(), Precondition::None)
            .await
            .unwrap();
        written.insert(n, v);
    }
    let st = ts.admin.keyring_status().await.unwrap();
    assert_eq!(st.current, Some(1));
    assert_eq!(st.versions.len(), 1);
    assert_eq!(st.versions[0].data_keys, 60);
    // Only administrators rotate.
    assert_code(c.client.keyring_rotate().await, ErrorCode::Forbidden);

    let r = ts.admin.keyring_rotate().await.unwrap();
    assert_eq!(r.version, 2);
    // The current version cannot be retired; version 1 not while data keys use it.
    assert_code(ts.admin.keyring_retire(2).await, ErrorCode::InvalidState);
    let mid = ts.admin.keyring_status().await.unwrap();
    if mid.rewrap_pending > 0 {
        assert_code(ts.admin.keyring_retire(1).await, ErrorCode::InvalidState);
    }
    // During: new writes use version 2 at once; everything reads back.
    for i in 0..20 {
        let n = format!("during/{i}");
        let v = format!("during {i}").into_bytes();
        c.client
            .put(&name(&n), v.clone(), Precondition::None)
            .await
            .unwrap();
        written.insert(n, v);
    }
    for (n, v) in &written {
        assert_eq!(
            &c.client.get(&name(n), None).await.unwrap().payload[..],
            &v[..],
            "{n}"
        );
    }
    let done = wait_rewrapped(&ts).await;
    let v1 = done.versions.iter().find(|v| v.version == 1).unwrap();
    let v2 = done.versions.iter().find(|v| v.version == 2).unwrap();
    assert_eq!(v1.data_keys, 0);
    assert_eq!(v2.data_keys, 80);
    // The audit signing key is re-wrapped with them; the restart below unwraps it.
    assert!(
        v2.usage
            .iter()
            .any(|u| u.kind == "audit-signing-key" && u.count == 1),
        "{v2:?}"
    );
    assert!(v1.usage.iter().all(|u| u.count == 0), "{v1:?}");
    assert!(v2.current);

    // After: a restart re-opens both versions and every deposit still reads.
    let summary = ts.summary.clone();
    let dir = ts.data_dir.clone();
    let home = c.home.clone();
    let root = ts.stop_keep().await;
    let ts = TestServer::open_existing(&dir, summary, |_| {}).await;
    let mut home2 = home.clone();
    home2.config.servers = vec![ts.url.clone()];
    let client = keysafe_client::KeysafeClient::from_home(&home2).unwrap();
    for (n, v) in &written {
        assert_eq!(
            &client.get(&name(n), None).await.unwrap().payload[..],
            &v[..],
            "{n}"
        );
    }
    // Retiring the unused version works, and deletes it from the database.
    let st = ts.admin.keyring_retire(1).await.unwrap();
    assert_eq!(st.versions.len(), 1);
    assert_code(ts.admin.keyring_retire(1).await, ErrorCode::NotFound);
    let mut db = ts.raw_db().await;
    let n = db
        .scalar("SELECT COUNT(*) FROM keyring WHERE version = 1", &[])
        .await
        .unwrap();
    assert_eq!(n.as_int(), Some(0));
    let stale = db
        .scalar(
            "SELECT COUNT(*) FROM deposit_versions WHERE kek_version != 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(stale.as_int(), Some(0));
    for (n, v) in &written {
        assert_eq!(
            &client.get(&name(n), None).await.unwrap().payload[..],
            &v[..],
            "{n}"
        );
    }
    // A second rotation works the same way.
    assert_eq!(ts.admin.keyring_rotate().await.unwrap().version, 3);
    wait_rewrapped(&ts).await;
    for (n, v) in &written {
        assert_eq!(
            &client.get(&name(n), None).await.unwrap().payload[..],
            &v[..],
            "{n}"
        );
    }
    drop(ts);
    drop(root);
}

async fn a_tampered_data_key_is_left_alone_by_the_rewrap_and_blocks_retirement(
    storage: TestStorage,
) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    for i in 0..3 {
        c.client
            .put(&name(&format!("k{i}")), b"x".to_vec(), Precondition::None)
            .await
            .unwrap();
    }
    let mut db = ts.raw_db().await;
    db.execute(
        "UPDATE deposit_versions SET wrapped_dek = ?1 WHERE name = 'k1'",
        &[vec![0u8; 60].into()],
    )
    .await
    .unwrap();
    ts.admin.keyring_rotate().await.unwrap();
    // The job finishes with one row it cannot move; that row keeps version 1 alive.
    let mut st = ts.admin.keyring_status().await.unwrap();
    for _ in 0..600 {
        if st.rewrap_pending == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        st = ts.admin.keyring_status().await.unwrap();
    }
    assert_eq!(st.rewrap_pending, 1);
    assert_code(ts.admin.keyring_retire(1).await, ErrorCode::InvalidState);
    assert_code(
        c.client.get(&name("k1"), None).await,
        ErrorCode::IntegrityError,
    );
    assert_eq!(
        &c.client.get(&name("k2"), None).await.unwrap().payload[..],
        b"x"
    );
}

async fn rotation_under_sharing_keeps_owner_and_grantee_reading(storage: TestStorage) {
    use keysafe_client::CacheUse;
    use keysafe_proto::api::{Access, AclChange};
    let ts = TestServer::start_on(storage).await;
    let owner = ts.new_client("acme").await;
    let reader = ts.new_client("acme").await;
    let vo = owner.vault();
    let vr = reader.vault();
    let owner_fp = owner.fingerprint.as_str().to_owned();
    for v in 1..=3u8 {
        vo.put(None, &name("shared/key"), &[v; 40], Precondition::None)
            .await
            .unwrap();
    }
    assert_eq!(ts.admin.keyring_rotate().await.unwrap().version, 2);
    // Granting re-encrypts every version for the reader, during the re-wrap: the new rows use
    // version 2 at once.
    vo.change_acl(
        None,
        &name("shared/key"),
        AclChange::Grant {
            grantee: reader.fingerprint.as_str().to_owned(),
            access: Access::Read,
        },
        &|_, _| {},
    )
    .await
    .unwrap();
    let done = wait_rewrapped(&ts).await;
    assert_eq!(
        done.versions
            .iter()
            .find(|v| v.version == 1)
            .unwrap()
            .data_keys,
        0
    );
    ts.admin.keyring_retire(1).await.unwrap();
    for v in 1..=3u8 {
        let dv = Some(keysafe_proto::DepositVersion::new(u64::from(v)).unwrap());
        let mine = vo
            .get(None, &name("shared/key"), dv, CacheUse::Refresh)
            .await
            .unwrap();
        assert_eq!(&*mine.plaintext, &[v; 40][..]);
        let theirs = vr
            .get(Some(&owner_fp), &name("shared/key"), dv, CacheUse::Refresh)
            .await
            .unwrap();
        assert_eq!(&*theirs.plaintext, &[v; 40][..]);
    }
}

/// Another process on the same store moved the keyring to a seal this server cannot open (a
/// seal migration and a rotation elsewhere): a row on a keyring version this server does not
/// hold makes it reload the keyring, and finding no row it can open, it seals itself and says
/// why. Its clients get `sealed`, never a false `integrity_error`.
async fn a_keyring_moved_to_a_seal_this_process_cannot_open_seals_it_instead_of_failing_integrity(
    storage: TestStorage,
) {
    use keysafe_core::keyring::Keyring;
    use keysafe_core::seal::{FileSeal, KdfParams, PassphraseSeal, Seal};
    use keysafe_core::store::{Mutation, WrappedKind};
    use std::sync::Arc;

    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"v".to_vec(), Precondition::None)
        .await
        .unwrap();

    // The other process: it holds the root key, wraps the keyring under a passphrase seal of
    // its own, rotates, re-wraps the deposit and drops the rows of the file seal.
    let keysafe_server::config::SealConfig::File { root_key_file } = &ts.config.seal else {
        panic!("file seal expected");
    };
    let store = keysafe_store::open(&ts.config.storage).await.unwrap();
    let old: Arc<dyn Seal> = Arc::new(FileSeal::open(root_key_file).unwrap());
    let ring = Keyring::open(old, &store.load_keks().await.unwrap()).unwrap();
    let new: Arc<dyn Seal> = Arc::new(
        PassphraseSeal::derive(b"elsewhere passphrase", KdfParams::generate().unwrap()).unwrap(),
    );
    let now = keysafe_proto::Timestamp::now();
    let (rotated, _) = ring.rotated(new.as_ref(), now).unwrap();
    for r in rotated.wrap_all(new.as_ref(), now).unwrap() {
        store.apply(Mutation::InsertKek(r)).await.unwrap();
    }
    store
        .apply(Mutation::KeepOnlySeal {
            keep: new.descriptor(),
        })
        .await
        .unwrap();
    let rows = store
        .list_stale_wrapped(WrappedKind::DepositVersion, 2, None, 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    for row in rows {
        let aad = keysafe_core::service::rewrap::aad_for(&row.id);
        let dek = ring
            .unwrap_dek(row.kek_version, &aad, &row.wrapped)
            .unwrap();
        let (kek_version, wrapped) = rotated.wrap_dek(&aad, &dek).unwrap();
        store
            .apply(Mutation::Rewrap {
                id: row.id,
                expected_kek: row.kek_version,
                kek_version,
                wrapped,
            })
            .await
            .unwrap();
    }

    assert_code(c.client.get(&name("k"), None).await, ErrorCode::Sealed);
    let h = ts.anonymous_client().health().await.unwrap();
    assert_eq!(h.status, "sealed");
    let reason = h.sealed_reason.unwrap();
    assert!(reason.contains("no longer opens"), "{reason}");
}

/// A row wrapped by a keyring version another process added with a root key this process does
/// not have (same seal kind, different key): sealed, not tampered.
async fn a_keyring_version_this_seal_cannot_unwrap_seals_instead_of_failing_integrity(
    storage: TestStorage,
) {
    use keysafe_core::keyring::Keyring;
    use keysafe_core::seal::{FileSeal, Seal};
    use keysafe_core::store::{Mutation, WrappedKind};
    use std::sync::Arc;

    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    let keysafe_server::config::SealConfig::File { root_key_file } = &ts.config.seal else {
        panic!("file seal expected");
    };
    let store = keysafe_store::open(&ts.config.storage).await.unwrap();
    let ring = Keyring::open(
        Arc::new(FileSeal::open(root_key_file).unwrap()),
        &store.load_keks().await.unwrap(),
    )
    .unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other: Arc<dyn Seal> = Arc::new(FileSeal::create(&other_dir.path().join("k")).unwrap());
    let (rotated, record) = ring
        .rotated(other.as_ref(), keysafe_proto::Timestamp::now())
        .unwrap();
    store.apply(Mutation::InsertKek(record)).await.unwrap();
    let row = store
        .list_stale_wrapped(WrappedKind::DepositVersion, 2, None, 1)
        .await
        .unwrap()
        .remove(0);
    let aad = keysafe_core::service::rewrap::aad_for(&row.id);
    let dek = ring
        .unwrap_dek(row.kek_version, &aad, &row.wrapped)
        .unwrap();
    let (kek_version, wrapped) = rotated.wrap_dek(&aad, &dek).unwrap();
    store
        .apply(Mutation::Rewrap {
            id: row.id,
            expected_kek: row.kek_version,
            kek_version,
            wrapped,
        })
        .await
        .unwrap();
    assert_code(c.client.get(&name("k"), None).await, ErrorCode::Sealed);
    assert!(ts.service().is_sealed());
}

/// Reads keep a cached row's data key and content tag with the row (the SQLite store's cache of
/// current versions hands every read the same row); PostgreSQL rows are read afresh, so nothing
/// is kept. Sealing lets go of every kept data key: the next read of the row starts empty.
async fn reads_keep_the_data_key_with_a_cached_row_until_the_seal(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let secret = ts.create_org("acme").await;
    let c = ts.register("acme", Some(secret)).await.unwrap();
    c.client
        .put(&name("k"), b"secret".to_vec(), Precondition::None)
        .await
        .unwrap();
    let key = keysafe_core::store::DepositKey {
        owner: keysafe_proto::Principal::Client(c.fingerprint.clone()),
        name: name("k"),
    };
    let store = ts.service().store().clone();
    let cached = storage == TestStorage::Sqlite;
    // A cached row is served for a few seconds at most: on a machine so loaded that more passed
    // between the read and the look, read again.
    let mut row = None;
    for _ in 0..5 {
        let got = c.client.get(&name("k"), None).await.unwrap();
        assert_eq!(&got.payload[..], b"secret");
        let r = store.get_version(&key, None).await.unwrap().unwrap();
        if r.2.holds_dek() == cached {
            row = Some(r);
            break;
        }
    }
    let row = row.unwrap_or_else(|| panic!("the row's memo never matched cached={cached}"));
    assert_eq!(row.2.etag().is_some(), cached, "{:?}", row.2);
    // The kept tag is the one the server answers with.
    let got = c
        .client
        .raw_request(http::Method::GET, "/v1/deposits/k")
        .send()
        .await
        .unwrap();
    if let Some(tag) = row.2.etag() {
        let served = got.headers().get("etag").unwrap().to_str().unwrap();
        assert_eq!(served, format!("\"{tag}\""));
    }
    drop(row);

    ts.service().seal_now("sealed by the test");
    let row = store.get_version(&key, None).await.unwrap().unwrap();
    assert!(!row.2.holds_dek() && row.2.etag().is_none(), "{:?}", row.2);
    // (The client would answer from its own copy: ask the server itself.)
    let sealed = c
        .client
        .raw_request(http::Method::GET, "/v1/deposits/k")
        .send()
        .await
        .unwrap();
    assert_eq!(sealed.status().as_u16(), 503);
    let row = store.get_version(&key, None).await.unwrap().unwrap();
    assert!(!row.2.holds_dek(), "a sealed read kept a data key");
}

// Every test above runs on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(multi_thread:
    reads_keep_the_data_key_with_a_cached_row_until_the_seal,
    passphrase_seal_starts_sealed_and_unseals_over_the_api,
    rotation_keeps_every_deposit_readable_before_during_and_after,
    a_tampered_data_key_is_left_alone_by_the_rewrap_and_blocks_retirement,
    rotation_under_sharing_keeps_owner_and_grantee_reading,
    a_keyring_moved_to_a_seal_this_process_cannot_open_seals_it_instead_of_failing_integrity,
    a_keyring_version_this_seal_cannot_unwrap_seals_instead_of_failing_integrity,
);
