//! Keys at rest: nothing in the clear in the files that hold the store, and tampering is
//! detected.

use crate::assert_code;
use keysafe_client::Precondition;
use keysafe_proto::{DepositName, ErrorCode};
use keysafe_testkit::{TestServer, TestStorage};

fn name(s: &str) -> DepositName {
    DepositName::parse(s).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn database_and_wal_never_hold_plaintext(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    let marker = b"PLAINTEXT-MARKER-7f3a9c-keysafe";
    let mut payload = Vec::new();
    for _ in 0..32 {
        payload.extend_from_slice(marker);
    }
    for i in 0..5 {
        c.client
            .put(
                &name(&format!("secret/{i}")),
                payload.clone(),
                Precondition::None,
            )
            .await
            .unwrap();
    }
    // Read it back so read paths run too.
    assert_eq!(
        &c.client.get(&name("secret/0"), None).await.unwrap().payload[..],
        &payload[..]
    );
    let root_key = std::fs::read(&ts.summary.root_key).unwrap();
    let mut checked = 0;
    for path in ts.files_at_rest() {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        checked += bytes.len();
        assert!(
            !contains(&bytes, marker),
            "plaintext found in {}",
            path.display()
        );
        assert!(
            !contains(&bytes, &root_key),
            "root key found in {}",
            path.display()
        );
    }
    assert!(checked > 0, "no database file was read");
    // The search must see what the store wrote, or it proves nothing: the sealed payload is
    // there, byte for byte.
    let sealed = blob(
        &ts,
        "SELECT ciphertext FROM deposit_versions WHERE name = 'secret/0'",
    )
    .await;
    assert!(
        contains(&ts.bytes_at_rest(), &sealed),
        "the stored ciphertext is not in the files searched"
    );
    assert!(contains(&payload, marker));
}

/// Overwrites one stored blob of deposit `k` with zeros of the same length.
async fn zero_blob(ts: &TestServer, col: &str) {
    let len = blob(
        ts,
        &format!("SELECT {col} FROM deposit_versions WHERE name = 'k'"),
    )
    .await
    .len();
    set_blob(
        ts,
        &format!("UPDATE deposit_versions SET {col} = ?1 WHERE name = 'k'"),
        vec![0; len],
    )
    .await;
}

async fn exec(ts: &TestServer, sql: &str) {
    let changed = ts.raw_db().await.execute(sql, &[]).await.unwrap();
    assert!(changed > 0, "tampering statement changed nothing: {sql}");
}

async fn blob(ts: &TestServer, sql: &str) -> Vec<u8> {
    let v = ts.raw_db().await.scalar(sql, &[]).await.unwrap();
    v.as_blob().unwrap().to_vec()
}

async fn set_blob(ts: &TestServer, sql: &str, value: Vec<u8>) {
    let changed = ts
        .raw_db()
        .await
        .execute(sql, &[value.into()])
        .await
        .unwrap();
    assert_eq!(changed, 1, "tampering statement changed nothing: {sql}");
}

async fn tampered_ciphertext_is_an_integrity_error(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"the real key".to_vec(), Precondition::None)
        .await
        .unwrap();
    // Flip one bit in the middle of the stored ciphertext.
    let mut ct = blob(
        &ts,
        "SELECT ciphertext FROM deposit_versions WHERE name = 'k'",
    )
    .await;
    let mid = ct.len() / 2;
    ct[mid] ^= 1;
    set_blob(
        &ts,
        "UPDATE deposit_versions SET ciphertext = ?1 WHERE name = 'k'",
        ct,
    )
    .await;
    assert_code(
        c.client.get(&name("k"), None).await,
        ErrorCode::IntegrityError,
    );
}

async fn tampered_wrapped_key_is_an_integrity_error(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"the real key".to_vec(), Precondition::None)
        .await
        .unwrap();
    zero_blob(&ts, "wrapped_dek").await;
    assert_code(
        c.client.get(&name("k"), None).await,
        ErrorCode::IntegrityError,
    );
}

async fn swapped_rows_do_not_open(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("a"), b"payload of a".to_vec(), Precondition::None)
        .await
        .unwrap();
    c.client
        .put(&name("b"), b"payload of b".to_vec(), Precondition::None)
        .await
        .unwrap();
    // Swap the sealed contents (ciphertext and wrapped key together) of two deposits.
    for col in ["ciphertext", "wrapped_dek"] {
        let a = blob(
            &ts,
            &format!("SELECT {col} FROM deposit_versions WHERE name = 'a'"),
        )
        .await;
        let b = blob(
            &ts,
            &format!("SELECT {col} FROM deposit_versions WHERE name = 'b'"),
        )
        .await;
        set_blob(
            &ts,
            &format!("UPDATE deposit_versions SET {col} = ?1 WHERE name = 'a'"),
            b,
        )
        .await;
        set_blob(
            &ts,
            &format!("UPDATE deposit_versions SET {col} = ?1 WHERE name = 'b'"),
            a,
        )
        .await;
    }
    assert_code(
        c.client.get(&name("a"), None).await,
        ErrorCode::IntegrityError,
    );
    assert_code(
        c.client.get(&name("b"), None).await,
        ErrorCode::IntegrityError,
    );
}

async fn swapped_versions_and_stolen_rows_do_not_open(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let victim = ts.new_client("acme").await;
    let thief = ts.new_client("acme").await;
    victim
        .client
        .put(&name("k"), b"version one".to_vec(), Precondition::None)
        .await
        .unwrap();
    victim
        .client
        .put(&name("k"), b"version two".to_vec(), Precondition::None)
        .await
        .unwrap();
    // Renumber version 1 as 3 and point the header at it: an attempt to roll a key back.
    exec(
        &ts,
        "UPDATE deposit_versions SET version = 3 WHERE name = 'k' AND version = 1",
    )
    .await;
    exec(
        &ts,
        "UPDATE deposits SET current_version = 3 WHERE name = 'k'",
    )
    .await;
    assert_code(
        victim.client.get(&name("k"), None).await,
        ErrorCode::IntegrityError,
    );
    // The header no longer carries its MAC's values (ADR 0013): every read of the deposit is
    // refused, not only the renumbered version.
    assert_code(
        victim
            .client
            .get(
                &name("k"),
                Some(keysafe_proto::DepositVersion::new(2).unwrap()),
            )
            .await,
        ErrorCode::IntegrityError,
    );

    // Copy the victim's sealed row under the thief's identity.
    thief
        .client
        .put(&name("k"), b"thief's own".to_vec(), Precondition::None)
        .await
        .unwrap();
    exec(
        &ts,
        &format!(
            "UPDATE deposit_versions SET \
               ciphertext = (SELECT ciphertext FROM deposit_versions WHERE owner = '{v}' AND version = 2), \
               wrapped_dek = (SELECT wrapped_dek FROM deposit_versions WHERE owner = '{v}' AND version = 2) \
             WHERE owner = '{t}'",
            v = victim.fingerprint,
            t = thief.fingerprint
        ),
    )
    .await;
    assert_code(
        thief.client.get(&name("k"), None).await,
        ErrorCode::IntegrityError,
    );
}

async fn integrity_errors_reveal_nothing(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"SECRET-BYTES".to_vec(), Precondition::None)
        .await
        .unwrap();
    zero_blob(&ts, "ciphertext").await;
    match c.client.get(&name("k"), None).await {
        Err(keysafe_client::ClientError::Api {
            message,
            request_id,
            ..
        }) => {
            assert!(!message.contains("SECRET"), "{message}");
            assert!(!message.contains("k@"), "internal detail leaked: {message}");
            assert!(request_id.is_some());
        }
        other => panic!("{other:?}"),
    }
}

// Every test above runs on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(
    database_and_wal_never_hold_plaintext,
    tampered_ciphertext_is_an_integrity_error,
    tampered_wrapped_key_is_an_integrity_error,
    swapped_rows_do_not_open,
    swapped_versions_and_stolen_rows_do_not_open,
    integrity_errors_reveal_nothing,
);
