//! Deposits: versions, ownership, preconditions, limits, names, soft delete and purge.

use crate::assert_code;
use keysafe_client::Precondition;
use keysafe_client::reqwest::Method;
use keysafe_proto::api::ListQuery;
use keysafe_proto::{DepositName, DepositVersion, ErrorCode};
use keysafe_testkit::{TestServer, TestStorage};

fn name(s: &str) -> DepositName {
    DepositName::parse(s).unwrap()
}

fn v(n: u64) -> DepositVersion {
    DepositVersion::new(n).unwrap()
}

async fn put_get_versions_round_trip(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    let n = name("db/master-key");
    let r1 = c
        .client
        .put(&n, vec![0u8, 1, 2, 255], Precondition::None)
        .await
        .unwrap();
    assert_eq!(r1.version, v(1));
    assert_eq!(r1.size, 4);
    let r2 = c
        .client
        .put(&n, b"second".to_vec(), Precondition::None)
        .await
        .unwrap();
    assert_eq!(r2.version, v(2));
    let cur = c.client.get(&n, None).await.unwrap();
    assert_eq!(cur.version, v(2));
    assert_eq!(&cur.payload[..], b"second");
    let old = c.client.get(&n, Some(v(1))).await.unwrap();
    assert_eq!(&old.payload[..], &[0u8, 1, 2, 255]);
    assert_code(c.client.get(&n, Some(v(3))).await, ErrorCode::NotFound);
    let vs = c.client.versions(&n).await.unwrap();
    assert_eq!(vs.versions.len(), 2);
    assert_eq!(vs.versions[0].version, v(1));
    assert_eq!(vs.versions[0].size, 4);
    assert_eq!(vs.versions[1].creator, c.fingerprint);
    assert!(vs.versions[0].created_at <= vs.versions[1].created_at);
    // Empty payloads are legal deposits.
    let e = c
        .client
        .put(&name("empty"), Vec::<u8>::new(), Precondition::None)
        .await
        .unwrap();
    assert_eq!(e.size, 0);
    assert!(
        c.client
            .get(&name("empty"), None)
            .await
            .unwrap()
            .payload
            .is_empty()
    );
}

async fn another_clients_deposit_is_indistinguishable_from_none(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let owner = ts.new_client("acme").await;
    let peer = ts.new_client("acme").await;
    let outsider = ts.new_client("other").await;
    let n = name("shared-name");
    owner
        .client
        .put(&n, b"owner's".to_vec(), Precondition::None)
        .await
        .unwrap();
    for c in [&peer, &outsider] {
        let missing = c
            .client
            .get(&name("never-existed"), None)
            .await
            .unwrap_err();
        let foreign = c.client.get(&n, None).await.unwrap_err();
        match (&missing, &foreign) {
            (
                keysafe_client::ClientError::Api {
                    code: c1,
                    status: s1,
                    message: m1,
                    ..
                },
                keysafe_client::ClientError::Api {
                    code: c2,
                    status: s2,
                    message: m2,
                    ..
                },
            ) => {
                assert_eq!(
                    (c1, s1, m1),
                    (c2, s2, m2),
                    "must look exactly like a missing name"
                );
                assert_eq!(*c2, ErrorCode::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert_code(c.client.versions(&n).await, ErrorCode::NotFound);
        assert_code(c.client.delete(&n).await, ErrorCode::NotFound);
        assert_code(c.client.purge(&n).await, ErrorCode::NotFound);
        assert!(
            c.client
                .list(&ListQuery::default())
                .await
                .unwrap()
                .deposits
                .is_empty()
        );
        // Writing the same name creates the writer's own deposit; the owner's is untouched.
        c.client
            .put(&n, b"mine".to_vec(), Precondition::None)
            .await
            .unwrap();
    }
    assert_eq!(
        &owner.client.get(&n, None).await.unwrap().payload[..],
        b"owner's"
    );
    assert_eq!(owner.client.versions(&n).await.unwrap().versions.len(), 1);
}

async fn if_match_is_compare_and_set(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    let n = name("cas");
    c.client
        .put(&n, b"1".to_vec(), Precondition::IfAbsent)
        .await
        .unwrap();
    assert_code(
        c.client
            .put(&n, b"x".to_vec(), Precondition::IfAbsent)
            .await,
        ErrorCode::VersionConflict,
    );
    c.client
        .put(&n, b"2".to_vec(), Precondition::IfMatch(v(1)))
        .await
        .unwrap();
    // A writer that read version 1 loses against the one that already wrote version 2.
    assert_code(
        c.client
            .put(&n, b"stale".to_vec(), Precondition::IfMatch(v(1)))
            .await,
        ErrorCode::VersionConflict,
    );
    assert_eq!(&c.client.get(&n, None).await.unwrap().payload[..], b"2");
    assert_code(
        c.client
            .put(&name("nope"), b"x".to_vec(), Precondition::IfMatch(v(1)))
            .await,
        ErrorCode::VersionConflict,
    );
    // Malformed preconditions are refused.
    let r = c
        .client
        .raw_request(Method::PUT, "/v1/deposits/cas")
        .header("if-match", "\"banana\"")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(c.client.versions(&n).await.unwrap().versions.len(), 2);
}

async fn concurrent_writers_without_precondition_all_land(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    let n = name("busy");
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let cl = c.client.clone();
        let n = n.clone();
        tasks.push(tokio::spawn(async move {
            cl.put(&n, i.to_be_bytes().to_vec(), Precondition::None)
                .await
                .unwrap()
                .version
        }));
    }
    let mut versions: Vec<(DepositVersion, u32)> = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        versions.push((t.await.unwrap(), i as u32));
    }
    let mut numbers: Vec<u64> = versions.iter().map(|(v, _)| v.get()).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=40).collect::<Vec<u64>>(),
        "every put gets its own version"
    );
    // Each version holds what the put that was told its number sent.
    for (version, i) in versions {
        let got = c.client.get(&n, Some(version)).await.unwrap();
        assert_eq!(got.payload.as_ref(), i.to_be_bytes(), "version {version}");
    }
}

async fn conditional_writers_among_unconditional_ones_judge_what_is_stored(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    let n = name("busy");
    c.client
        .put(&n, b"first".to_vec(), Precondition::None)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..30u32 {
        let cl = c.client.clone();
        let n = n.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                // A conditional put on the version it just read: either it was still current
                // when the put was judged, or the answer names a newer one.
                let seen = cl
                    .get_with(&n, None, keysafe_client::CacheUse::Refresh)
                    .await
                    .unwrap()
                    .version;
                match cl
                    .put(&n, i.to_be_bytes().to_vec(), Precondition::IfMatch(seen))
                    .await
                {
                    Ok(r) => {
                        assert_eq!(r.version, seen.next(), "a conditional put builds on `seen`");
                        Some((r.version, i))
                    }
                    Err(e) => {
                        assert_eq!(e.code(), Some(ErrorCode::VersionConflict), "{e}");
                        None
                    }
                }
            } else {
                let r = cl
                    .put(&n, i.to_be_bytes().to_vec(), Precondition::None)
                    .await
                    .unwrap();
                Some((r.version, i))
            }
        }));
    }
    let mut landed = Vec::new();
    for t in tasks {
        landed.extend(t.await.unwrap());
    }
    let vs = c.client.versions(&n).await.unwrap().versions;
    assert_eq!(
        vs.len(),
        landed.len() + 1,
        "every acknowledged put is stored, nothing else"
    );
    assert!(landed.len() >= 20, "every unconditional put landed");
    for (version, i) in landed {
        let got = c.client.get(&n, Some(version)).await.unwrap();
        assert_eq!(got.payload.as_ref(), i.to_be_bytes(), "version {version}");
    }
}

async fn oversized_payload_is_413_and_stores_nothing(storage: TestStorage) {
    let ts = TestServer::start_on_with(storage, |c| c.max_deposit_size = 1024).await;
    let c = ts.new_client("acme").await;
    let n = name("big");
    c.client
        .put(&n, vec![7u8; 1024], Precondition::None)
        .await
        .unwrap();
    assert_code(
        c.client.put(&n, vec![7u8; 1025], Precondition::None).await,
        ErrorCode::PayloadTooLarge,
    );
    // Without a Content-Length (chunked), the limit holds while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![1u8; 800]), Ok(vec![2u8; 800])];
    let stream = futures_util::stream::iter(chunks);
    let r = c
        .client
        .raw_request(Method::PUT, "/v1/deposits/big")
        .body(keysafe_client::reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let vs = c.client.versions(&n).await.unwrap();
    assert_eq!(vs.versions.len(), 1, "nothing stored by refused puts");
}

async fn default_limit_is_one_mebibyte(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("mib"), vec![1u8; 1024 * 1024], Precondition::None)
        .await
        .unwrap();
    assert_code(
        c.client
            .put(&name("mib"), vec![1u8; 1024 * 1024 + 1], Precondition::None)
            .await,
        ErrorCode::PayloadTooLarge,
    );
}

async fn bad_names_are_400_naming_the_rule(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    let long = format!("/v1/deposits/{}", "a".repeat(257));
    // ('.' and '..' segments cannot be sent through an HTTP client library, which normalises
    // them away; the name rule itself is unit-tested in keysafe-proto.)
    for path in [
        "/v1/deposits/a//b",
        "/v1/deposits/a%20b",
        "/v1/deposits/%C3%BC",
        "/v1/deposits/a/",
        long.as_str(),
    ] {
        let r = c
            .client
            .raw_request(Method::PUT, path)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let body: keysafe_proto::ErrorBody = r.json().await.unwrap();
        assert_eq!(body.error.code, ErrorCode::InvalidName, "{path}");
        assert!(
            body.error.message.contains("A-Z a-z 0-9 . _ / -"),
            "{}",
            body.error.message
        );
    }
    assert!(
        c.client
            .list(&ListQuery {
                deleted: Some(true),
                ..Default::default()
            })
            .await
            .unwrap()
            .deposits
            .is_empty()
    );
    let r = c
        .client
        .raw_request(Method::GET, "/v1/deposits?prefix=a%20b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

async fn listing_by_prefix_with_pagination(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    for i in 0..25 {
        c.client
            .put(
                &name(&format!("app/k{i:02}")),
                b"x".to_vec(),
                Precondition::None,
            )
            .await
            .unwrap();
    }
    c.client
        .put(&name("apple"), b"x".to_vec(), Precondition::None)
        .await
        .unwrap();
    c.client
        .put(&name("other/k"), b"x".to_vec(), Precondition::None)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = c
            .client
            .list(&ListQuery {
                prefix: Some("app/".into()),
                limit: Some(10),
                page_token: token.take(),
                deleted: None,
                owner: None,
            })
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.deposits.into_iter().map(|d| d.name.to_string()));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("app/k{i:02}")).collect();
    assert_eq!(seen, want);
    let all = c.client.list(&ListQuery::default()).await.unwrap();
    assert_eq!(all.deposits.len(), 27);
    let r = c
        .client
        .raw_request(Method::GET, "/v1/deposits?page_token=%%%")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

async fn soft_delete_undelete_and_purge(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    let n = name("temp");
    c.client
        .put(&n, b"one".to_vec(), Precondition::None)
        .await
        .unwrap();
    c.client
        .put(&n, b"two".to_vec(), Precondition::None)
        .await
        .unwrap();
    let d = c.client.delete(&n).await.unwrap();
    assert!(d.deleted);
    assert_code(c.client.get(&n, None).await, ErrorCode::Deleted);
    assert_code(c.client.get(&n, Some(v(1))).await, ErrorCode::Deleted);
    assert_code(
        c.client
            .put(&n, b"three".to_vec(), Precondition::None)
            .await,
        ErrorCode::Deleted,
    );
    assert_code(c.client.delete(&n).await, ErrorCode::InvalidState);
    assert!(
        c.client
            .list(&ListQuery::default())
            .await
            .unwrap()
            .deposits
            .is_empty()
    );
    let with_deleted = c
        .client
        .list(&ListQuery {
            deleted: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(with_deleted.deposits.len(), 1);
    assert!(c.client.versions(&n).await.unwrap().deleted);

    let u = c.client.undelete(&n).await.unwrap();
    assert!(!u.deleted);
    assert_eq!(u.version, v(2));
    assert_eq!(&c.client.get(&n, None).await.unwrap().payload[..], b"two");
    assert_code(c.client.undelete(&n).await, ErrorCode::InvalidState);

    let p = c.client.purge(&n).await.unwrap();
    assert_eq!(p.purged_versions, 2);
    assert_code(c.client.get(&n, None).await, ErrorCode::NotFound);
    assert_code(c.client.versions(&n).await, ErrorCode::NotFound);
    assert_code(c.client.purge(&n).await, ErrorCode::NotFound);
    // The rows are gone from the database too.
    let count = ts
        .raw_db()
        .await
        .scalar(
            "SELECT count(*) FROM deposit_versions WHERE name = 'temp'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(count.as_int(), Some(0));
    // A purged name can be used afresh, starting at version 1.
    assert_eq!(
        c.client
            .put(&n, b"new".to_vec(), Precondition::None)
            .await
            .unwrap()
            .version,
        v(1)
    );
}

// Every test above runs on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(
    put_get_versions_round_trip,
    another_clients_deposit_is_indistinguishable_from_none,
    if_match_is_compare_and_set,
    concurrent_writers_without_precondition_all_land,
    conditional_writers_among_unconditional_ones_judge_what_is_stored,
    oversized_payload_is_413_and_stores_nothing,
    default_limit_is_one_mebibyte,
    bad_names_are_400_naming_the_rule,
    listing_by_prefix_with_pagination,
    soft_delete_undelete_and_purge,
);
