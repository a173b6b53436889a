//! End-to-end encryption and sharing: the server only ever holds ciphertext; grants re-encrypt
//! for the grantee; revocation and non-grantees get nothing.

use crate::assert_code;
use keysafe_client::vault::Vault;
use keysafe_client::{CacheUse, Precondition};
use keysafe_proto::api::{Access, AclChange, Encoding};
use keysafe_proto::{DepositName, ErrorCode};
use keysafe_testkit::{TestClient, TestServer, TestStorage};

fn name(s: &str) -> DepositName {
    DepositName::parse(s).unwrap()
}

const SECRET: &[u8] = b"top-secret-key-material-0123456789";
// Long enough that finding one by chance in random ciphertext is impossible in practice.
const V1: &[u8] = b"first-version-secret-material-0001";
const V2: &[u8] = b"second-version-secret-material-002";
const V3: &[u8] = b"third-version-secret-material-0003";

fn no_progress(_: usize, _: usize) {}

async fn grant(v: &Vault, n: &str, to: &str, access: Access) {
    v.change_acl(
        None,
        &name(n),
        AclChange::Grant {
            grantee: to.to_owned(),
            access,
        },
        &no_progress,
    )
    .await
    .unwrap();
}

/// What the server itself holds for a deposit, decrypted with its own keys: the client's
/// ciphertext, never the plaintext.
async fn server_view(ts: &TestServer, owner: &TestClient, n: &str, v: u64) -> Vec<u8> {
    let caller = keysafe_core::Caller {
        fingerprint: owner.fingerprint.clone(),
        org: owner.org.clone(),
        role: keysafe_proto::api::ClientRole::Client,
    };
    ts.service()
        .get_deposit(
            &caller,
            None,
            name(n),
            Some(keysafe_proto::DepositVersion::new(v).unwrap()),
        )
        .await
        .unwrap()
        .payload
        .to_vec()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn the_server_only_ever_sees_ciphertext(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let a = ts.new_client("acme").await;
    let va = a.vault();
    va.put(None, &name("db/key"), SECRET, Precondition::None)
        .await
        .unwrap();
    let held = server_view(&ts, &a, "db/key", 1).await;
    assert!(held.starts_with(b"age-encryption.org/v1\n"));
    assert!(!contains(&held, SECRET));
    // ... and the raw database has neither.
    let db = ts.bytes_at_rest();
    assert!(!contains(&db, SECRET));
    // The owner decrypts.
    let got = va
        .get(None, &name("db/key"), None, CacheUse::Refresh)
        .await
        .unwrap();
    assert_eq!(&*got.plaintext, SECRET);
    assert_eq!(got.encoding, Encoding::Age);
    // The version list says how it is encoded.
    let versions = a.client.versions(&name("db/key")).await.unwrap();
    assert_eq!(versions.versions[0].encoding, Encoding::Age);
}

async fn a_grantee_decrypts_others_get_404_and_revocation_ends_access(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let owner = ts.new_client("acme").await;
    let reader = ts.new_client("acme").await;
    let stranger = ts.new_client("acme").await;
    let outsider = ts.new_client("globex").await;
    let vo = owner.vault();
    let n = name("db/key");
    vo.put(None, &n, V1, Precondition::None).await.unwrap();
    vo.put(None, &n, V2, Precondition::None).await.unwrap();
    let owner_fp = owner.fingerprint.as_str().to_owned();

    // Not shared yet: exactly like a missing deposit.
    assert_code(
        reader
            .client
            .get_of(Some(&owner_fp), &n, None, CacheUse::Refresh)
            .await,
        ErrorCode::NotFound,
    );
    grant(&vo, "db/key", reader.fingerprint.as_str(), Access::Read).await;

    // Every version was re-encrypted for the grantee, which decrypts it.
    let vr = reader.vault();
    for (v, want) in [(1, V1), (2, V2)] {
        let got = vr
            .get(
                Some(&owner_fp),
                &n,
                Some(keysafe_proto::DepositVersion::new(v).unwrap()),
                CacheUse::Refresh,
            )
            .await
            .unwrap();
        assert_eq!(&*got.plaintext, want);
    }
    assert!(!contains(&server_view(&ts, &owner, "db/key", 2).await, V2));
    let shared = reader.client.shared().await.unwrap();
    assert_eq!(shared.deposits.len(), 1);
    assert_eq!(shared.deposits[0].owner, owner_fp);
    assert_eq!(shared.deposits[0].access, Access::Read);

    // Read-only: no new versions, no ACL changes.
    assert_code(
        vr.put(Some(&owner_fp), &n, b"mine now", Precondition::None)
            .await,
        ErrorCode::Forbidden,
    );
    assert_code(
        vr.change_acl(
            Some(&owner_fp),
            &n,
            AclChange::Grant {
                grantee: stranger.fingerprint.as_str().to_owned(),
                access: Access::Read,
            },
            &no_progress,
        )
        .await,
        ErrorCode::Forbidden,
    );
    // Others in the organisation and other organisations see nothing.
    for c in [&stranger, &outsider] {
        assert_code(
            c.client
                .get_of(Some(&owner_fp), &n, None, CacheUse::Refresh)
                .await,
            ErrorCode::NotFound,
        );
        assert_code(c.client.acl(Some(&owner_fp), &n).await, ErrorCode::NotFound);
    }
    // Grants stay inside the organisation.
    assert_code(
        vo.change_acl(
            None,
            &n,
            AclChange::Grant {
                grantee: outsider.fingerprint.as_str().to_owned(),
                access: Access::Read,
            },
            &no_progress,
        )
        .await,
        ErrorCode::NotFound,
    );

    // Revoke: the grantee cannot fetch anything, old or new.
    vo.change_acl(
        None,
        &n,
        AclChange::Revoke {
            grantee: reader.fingerprint.as_str().to_owned(),
        },
        &no_progress,
    )
    .await
    .unwrap();
    vo.put(None, &n, V3, Precondition::None).await.unwrap();
    assert_code(
        reader
            .client
            .get_of(Some(&owner_fp), &n, None, CacheUse::Refresh)
            .await,
        ErrorCode::NotFound,
    );
    // And what the server holds is no longer encrypted to it: even a copy of the ciphertext
    // does not open with its key.
    let held = server_view(&ts, &owner, "db/key", 3).await;
    assert!(vr.decrypt(&held).await.is_err());
    assert_eq!(&*vo.decrypt(&held).await.unwrap(), V3);
}

async fn a_writer_adds_versions_for_every_recipient(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let owner = ts.new_client("acme").await;
    let writer = ts.new_client("acme").await;
    let vo = owner.vault();
    let n = name("app/key");
    vo.put(None, &n, b"one", Precondition::None).await.unwrap();
    grant(&vo, "app/key", writer.fingerprint.as_str(), Access::Write).await;
    let owner_fp = owner.fingerprint.as_str().to_owned();
    let vw = writer.vault();
    let put = vw
        .put(Some(&owner_fp), &n, b"two", Precondition::None)
        .await
        .unwrap();
    assert_eq!(put.version.get(), 2);
    // The owner reads what the writer wrote: it was encrypted to the owner too.
    let got = vo.get(None, &n, None, CacheUse::Refresh).await.unwrap();
    assert_eq!(&*got.plaintext, b"two");
    // A writer still cannot delete or purge.
    assert_code(
        writer.client.delete_of(Some(&owner_fp), &n).await,
        ErrorCode::Forbidden,
    );
}

async fn acl_changes_are_compare_and_set(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let owner = ts.new_client("acme").await;
    let other = ts.new_client("acme").await;
    let vo = owner.vault();
    let n = name("k");
    vo.put(None, &n, b"one", Precondition::None).await.unwrap();
    let acl = owner.client.acl(None, &n).await.unwrap();
    // A stale ACL serial is refused and changes nothing.
    let stale = keysafe_proto::api::AclUpdate {
        change: AclChange::Grant {
            grantee: other.fingerprint.as_str().to_owned(),
            access: Access::Read,
        },
        expected_version: acl.version,
        expected_acl_serial: acl.acl_serial + 1,
        versions: vec![],
    };
    assert_code(
        owner.client.update_acl(None, &n, &stale).await,
        ErrorCode::VersionConflict, // the age version was not re-encrypted
    );
    let mut with_versions = stale.clone();
    with_versions.versions = vec![keysafe_proto::api::ReencryptedVersion {
        version: acl.version,
        payload: "AAAA".into(),
    }];
    assert_code(
        owner.client.update_acl(None, &n, &with_versions).await,
        ErrorCode::VersionConflict,
    );
    assert!(owner.client.acl(None, &n).await.unwrap().grants.is_empty());
    // A put encrypted for an ACL that changed since is a conflict, not a silent leak.
    grant(&vo, "k", other.fingerprint.as_str(), Access::Read).await;
    let r = owner
        .client
        .put_with(
            None,
            &n,
            b"x".to_vec(),
            keysafe_client::PutParams {
                encoding: Encoding::Age,
                acl_serial: Some(acl.acl_serial),
                ..Default::default()
            },
        )
        .await;
    assert_code(r, ErrorCode::VersionConflict);
}

// Every test above runs on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(
    the_server_only_ever_sees_ciphertext,
    a_grantee_decrypts_others_get_404_and_revocation_ends_access,
    a_writer_adds_versions_for_every_recipient,
    acl_changes_are_compare_and_set,
);
