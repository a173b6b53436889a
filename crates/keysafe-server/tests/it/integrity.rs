//! Authenticated access rows against a real server (ADR 0013): an intruder who can write the
//! database but holds no seal edits the rows that decide access with raw SQL, and every edit is
//! refused with `integrity_error` while nothing is granted. The identity cache is off
//! (`identity_cache_ttl = 0`) so that each request reads the row as stored.

use crate::assert_code;
use keysafe_client::Precondition;
use keysafe_client::client::CacheUse;
use keysafe_proto::{ClientFingerprint, DepositName, ErrorCode};
use keysafe_testkit::{TestServer, TestStorage};
use std::time::Duration;

fn name(s: &str) -> DepositName {
    DepositName::parse(s).unwrap()
}

async fn start(storage: TestStorage) -> TestServer {
    TestServer::start_on_with(storage, |c| c.identity_cache_ttl = Duration::ZERO).await
}

async fn sql(ts: &TestServer, statement: &str, fp: &ClientFingerprint) {
    let changed = ts
        .raw_db()
        .await
        .execute(statement, &[fp.as_str().into()])
        .await
        .unwrap();
    assert_eq!(changed, 1, "the edit changed nothing: {statement}");
}

async fn promoting_a_client_with_sql_is_refused(storage: TestStorage) {
    let ts = start(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    // Not an administrator: refused as such.
    assert_code(c.client.list_orgs().await, ErrorCode::Forbidden);
    sql(
        &ts,
        "UPDATE clients SET role = 'admin' WHERE fingerprint = ?1",
        &c.fingerprint,
    )
    .await;
    assert_code(c.client.list_orgs().await, ErrorCode::IntegrityError);
    assert_code(
        c.client.get(&name("k"), None).await,
        ErrorCode::IntegrityError,
    );
    assert!(ts.service().integrity_failures() >= 2);
    // The honest administrator is not affected, and an action on the edited row is refused
    // rather than laundering it with a fresh MAC.
    ts.admin.list_orgs().await.unwrap();
    assert_code(
        ts.admin.client_action(&c.fingerprint, "disable").await,
        ErrorCode::IntegrityError,
    );
}

async fn re_enabling_a_disabled_client_with_sql_is_refused(storage: TestStorage) {
    let ts = start(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    ts.admin
        .client_action(&c.fingerprint, "disable")
        .await
        .unwrap();
    assert_code(
        c.client.get(&name("k"), None).await,
        ErrorCode::ClientDisabled,
    );
    sql(
        &ts,
        "UPDATE clients SET state = 'active' WHERE fingerprint = ?1",
        &c.fingerprint,
    )
    .await;
    assert_code(
        c.client.get(&name("k"), None).await,
        ErrorCode::IntegrityError,
    );
    // Putting the row back as keysafe wrote it makes it verify again.
    sql(
        &ts,
        "UPDATE clients SET state = 'disabled' WHERE fingerprint = ?1",
        &c.fingerprint,
    )
    .await;
    assert_code(
        c.client.get(&name("k"), None).await,
        ErrorCode::ClientDisabled,
    );
}

async fn changing_a_recipient_with_sql_is_refused(storage: TestStorage) {
    let ts = start(storage).await;
    let c = ts.new_client("acme").await;
    let intruder = keysafe_client::e2e::Identity::generate().recipient();
    let changed = ts
        .raw_db()
        .await
        .execute(
            "UPDATE clients SET recipient = ?2 WHERE fingerprint = ?1",
            &[c.fingerprint.as_str().into(), intruder.as_str().into()],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    // The client's own requests, and a lookup of its recipient by the administrator, refuse
    // the row instead of handing out the intruder's recipient.
    assert_code(c.client.whoami().await, ErrorCode::IntegrityError);
    assert_code(
        ts.admin.client_action(&c.fingerprint, "disable").await,
        ErrorCode::IntegrityError,
    );
}

async fn nulling_a_mac_is_refused(storage: TestStorage) {
    let ts = start(storage).await;
    let c = ts.new_client("acme").await;
    c.client.whoami().await.unwrap();
    sql(
        &ts,
        "UPDATE clients SET mac = NULL WHERE fingerprint = ?1",
        &c.fingerprint,
    )
    .await;
    assert_code(c.client.whoami().await, ErrorCode::IntegrityError);
}

async fn rows_from_before_the_upgrade_are_backfilled_once(storage: TestStorage) {
    let ts = start(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    // As the database was before the upgrade: no MAC anywhere, no back-fill record.
    let summary = ts.summary.clone();
    let dir = ts.data_dir.clone();
    let home = c.home.clone();
    let root = ts.stop_keep().await;
    let cfg = keysafe_server::config::Config::load(&dir).unwrap();
    let mut raw = keysafe_store::testing::RawDb::connect(&cfg.storage)
        .await
        .unwrap();
    for table in [
        "clients",
        "deposits",
        "deposit_grants",
        "group_members",
        "group_epochs",
    ] {
        raw.execute(&format!("UPDATE {table} SET mac = NULL"), &[])
            .await
            .unwrap();
    }
    raw.execute("DELETE FROM row_macs_backfill", &[])
        .await
        .unwrap();
    drop(raw);
    // The first start with the open seal authenticates them, and requests go on.
    let ts = TestServer::open_existing(&dir, summary, |c| {
        c.identity_cache_ttl = Duration::ZERO;
    })
    .await;
    let mut home2 = home.clone();
    home2.config.servers = vec![ts.url.clone()];
    let client = keysafe_client::KeysafeClient::from_home(&home2).unwrap();
    assert_eq!(
        &client.get(&name("k"), None).await.unwrap().payload[..],
        b"v"
    );
    ts.admin.whoami().await.unwrap();
    // From then on a row without a MAC is refused.
    sql(
        &ts,
        "UPDATE clients SET mac = NULL WHERE fingerprint = ?1",
        &c.fingerprint,
    )
    .await;
    // (A get would be answered from the client's cache on a 5xx: ask something uncached.)
    assert_code(client.whoami().await, ErrorCode::IntegrityError);
    ts.stop().await;
    drop(root);
}

async fn a_sealed_server_changes_no_authenticated_row(storage: TestStorage) {
    const PASSPHRASE: &str = "correct horse battery staple";
    let ts = TestServer::start_on_with_init(
        storage,
        |o| {
            o.seal.kind = "passphrase".into();
            o.passphrase = Some(zeroize::Zeroizing::new(PASSPHRASE.into()));
        },
        |c| c.identity_cache_ttl = Duration::ZERO,
    )
    .await;
    assert!(ts.service().is_sealed());
    // Reads go on; no registration and no client change until the unseal.
    let admin_fp = ts.admin.whoami().await.unwrap().fingerprint;
    assert_code(
        ts.admin.client_action(&admin_fp, "reset-token").await,
        ErrorCode::Sealed,
    );
    ts.admin.unseal(PASSPHRASE).await.unwrap();
    let c = ts.new_client("acme").await;
    c.client.whoami().await.unwrap();
}

/// A fresh read that does not fall back on the client's cache.
async fn fetch(
    c: &keysafe_client::KeysafeClient,
    owner: Option<&str>,
    n: &str,
) -> Result<Vec<u8>, keysafe_client::ClientError> {
    c.get_of(owner, &name(n), None, CacheUse::Refresh)
        .await
        .map(|f| f.payload.to_vec())
}

async fn granting_yourself_access_with_sql_is_refused(storage: TestStorage) {
    let ts = start(storage).await;
    let owner = ts.new_client("acme").await;
    let intruder = ts.new_client("acme").await;
    owner
        .client
        .put(&name("k"), b"secret".to_vec(), Precondition::None)
        .await
        .unwrap();
    let fp = owner.fingerprint.as_str();
    assert_code(
        fetch(&intruder.client, Some(fp), "k").await,
        ErrorCode::NotFound,
    );
    let changed = ts
        .raw_db()
        .await
        .execute(
            "INSERT INTO deposit_grants (owner, name, grantee, access, granted_by, granted_at) \
             VALUES (?1, 'k', ?2, 'write', ?1, 1)",
            &[fp.into(), intruder.fingerprint.as_str().into()],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    assert_code(
        fetch(&intruder.client, Some(fp), "k").await,
        ErrorCode::IntegrityError,
    );
    assert_code(intruder.client.shared().await, ErrorCode::IntegrityError);
    // Nor can the intruder write, and the owner's own reads are not affected by a grant row
    // they never use.
    assert_code(
        intruder
            .client
            .put_with(Some(fp), &name("k"), b"mine".to_vec(), Default::default())
            .await
            .map(|_| ()),
        ErrorCode::IntegrityError,
    );
    assert_eq!(fetch(&owner.client, None, "k").await.unwrap(), b"secret");
}

async fn rolling_a_deposit_back_with_sql_is_refused(storage: TestStorage) {
    let ts = start(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"one".to_vec(), Precondition::None)
        .await
        .unwrap();
    let mut raw = ts.raw_db().await;
    // The header as it was at version 1, with its MAC: what an intruder would replay.
    let old = raw
        .query(
            "SELECT current_version, acl_serial, mac FROM deposits WHERE name = 'k'",
            &[],
        )
        .await
        .unwrap()
        .remove(0);
    c.client
        .put(&name("k"), b"two".to_vec(), Precondition::None)
        .await
        .unwrap();
    let new = raw
        .query(
            "SELECT current_version, acl_serial, mac FROM deposits WHERE name = 'k'",
            &[],
        )
        .await
        .unwrap()
        .remove(0);
    // An edit of the current version.
    raw.execute(
        "UPDATE deposits SET current_version = 1 WHERE name = 'k'",
        &[],
    )
    .await
    .unwrap();
    assert_code(fetch(&c.client, None, "k").await, ErrorCode::IntegrityError);
    // A replay of the old header, MAC and all: the newer version row gives it away.
    raw.execute(
        "UPDATE deposits SET current_version = ?1, acl_serial = ?2, mac = ?3 WHERE name = 'k'",
        &old,
    )
    .await
    .unwrap();
    assert_code(fetch(&c.client, None, "k").await, ErrorCode::IntegrityError);
    // An edited ACL serial.
    raw.execute(
        "UPDATE deposits SET current_version = 2, acl_serial = 7 WHERE name = 'k'",
        &[],
    )
    .await
    .unwrap();
    assert_code(fetch(&c.client, None, "k").await, ErrorCode::IntegrityError);
    // The header as keysafe wrote it last verifies again.
    raw.execute(
        "UPDATE deposits SET current_version = ?1, acl_serial = ?2, mac = ?3 WHERE name = 'k'",
        &new,
    )
    .await
    .unwrap();
    assert_eq!(fetch(&c.client, None, "k").await.unwrap(), b"two");
}

async fn joining_a_group_or_changing_its_epoch_with_sql_is_refused(storage: TestStorage) {
    let ts = start(storage).await;
    let a = ts.new_client("acme").await;
    let intruder = ts.new_client("acme").await;
    let g = keysafe_proto::GroupName::parse("ops").unwrap();
    a.vault().create_group(&g, &[]).await.unwrap();
    // The group owns a deposit the intruder cannot reach.
    let owner = "group:ops";
    a.client
        .put_with(Some(owner), &name("k"), b"v".to_vec(), Default::default())
        .await
        .unwrap();
    assert_code(
        fetch(&intruder.client, Some(owner), "k").await,
        ErrorCode::NotFound,
    );
    // An intruder adds itself as a member.
    let changed = ts
        .raw_db()
        .await
        .execute(
            "INSERT INTO group_members (org, name, member, added_at) VALUES ('acme', 'ops', ?1, 1)",
            &[intruder.fingerprint.as_str().into()],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    assert_code(
        fetch(&intruder.client, Some(owner), "k").await,
        ErrorCode::IntegrityError,
    );
    assert_code(intruder.client.group(&g).await, ErrorCode::IntegrityError);
    ts.raw_db()
        .await
        .execute(
            "DELETE FROM group_members WHERE member = ?1",
            &[intruder.fingerprint.as_str().into()],
        )
        .await
        .unwrap();
    a.client.group(&g).await.unwrap();
    // An intruder changes the group's epoch, or its recipient: both refused.
    ts.raw_db()
        .await
        .execute("UPDATE groups SET epoch = 2 WHERE name = 'ops'", &[])
        .await
        .unwrap();
    assert_code(a.client.group(&g).await, ErrorCode::IntegrityError);
    ts.raw_db()
        .await
        .execute("UPDATE groups SET epoch = 1 WHERE name = 'ops'", &[])
        .await
        .unwrap();
    a.client.group(&g).await.unwrap();
    let other = keysafe_client::e2e::Identity::generate().recipient();
    ts.raw_db()
        .await
        .execute(
            "UPDATE group_epochs SET recipient = ?1 WHERE name = 'ops'",
            &[other.as_str().into()],
        )
        .await
        .unwrap();
    assert_code(a.client.group(&g).await, ErrorCode::IntegrityError);
}

async fn bulk_verify_lists_each_tampered_row_and_survives_rotation(storage: TestStorage) {
    let ts = start(storage).await;
    let a = ts.new_client("acme").await;
    let b = ts.new_client("acme").await;
    a.client
        .put(&name("k"), b"one".to_vec(), Precondition::None)
        .await
        .unwrap();
    a.client
        .put(&name("k"), b"two".to_vec(), Precondition::None)
        .await
        .unwrap();
    a.vault()
        .create_group(&keysafe_proto::GroupName::parse("ops").unwrap(), &[])
        .await
        .unwrap();
    // Untouched: every row verifies.
    let r = ts.admin.integrity_verify().await.unwrap();
    assert!(r.failures.is_empty(), "{r:?}");
    assert!(r.checked >= 7, "{r:?}");
    // Only administrators may ask.
    assert_code(a.client.integrity_verify().await, ErrorCode::Forbidden);

    // A keyring rotation, the re-wrap, then the retirement of version 1: still clean.
    ts.admin.keyring_rotate().await.unwrap();
    for _ in 0..600 {
        if ts.admin.keyring_status().await.unwrap().rewrap_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ts.admin.keyring_retire(1).await.unwrap();
    let r = ts.admin.integrity_verify().await.unwrap();
    assert!(r.failures.is_empty(), "{r:?}");

    // Tampered rows of several kinds: each is listed by kind and key.
    let mut raw = ts.raw_db().await;
    raw.execute(
        "UPDATE clients SET role = 'admin' WHERE fingerprint = ?1",
        &[b.fingerprint.as_str().into()],
    )
    .await
    .unwrap();
    raw.execute(
        "UPDATE deposits SET current_version = 1 WHERE name = 'k'",
        &[],
    )
    .await
    .unwrap();
    raw.execute(
        "UPDATE group_epochs SET recipient = 'age1intruder' WHERE name = 'ops'",
        &[],
    )
    .await
    .unwrap();
    let r = ts.admin.integrity_verify().await.unwrap();
    let mut found: Vec<(String, String)> = r
        .failures
        .iter()
        .map(|f| (f.kind.clone(), f.key.clone()))
        .collect();
    found.sort();
    let deposit = format!("{}/k", a.fingerprint);
    let mut expected = vec![
        ("client".to_owned(), b.fingerprint.to_string()),
        ("deposit".to_owned(), deposit.clone()),
        ("deposit".to_owned(), deposit),
        ("group-epoch".to_owned(), "acme/ops epoch 1".to_owned()),
    ];
    expected.sort();
    assert_eq!(found, expected, "{r:?}");
}

keysafe_testkit::storage_tests!(
    promoting_a_client_with_sql_is_refused,
    re_enabling_a_disabled_client_with_sql_is_refused,
    changing_a_recipient_with_sql_is_refused,
    nulling_a_mac_is_refused,
    rows_from_before_the_upgrade_are_backfilled_once,
    a_sealed_server_changes_no_authenticated_row,
    granting_yourself_access_with_sql_is_refused,
    rolling_a_deposit_back_with_sql_is_refused,
    joining_a_group_or_changing_its_epoch_with_sql_is_refused,
    bulk_verify_lists_each_tampered_row_and_survives_rotation,
);
