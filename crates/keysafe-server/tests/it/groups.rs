//! Groups: members share an identity that the server holds only wrapped per member. A member
//! added later reads once admitted; removing a member rotates the identity for later writes.

use crate::assert_code;
use keysafe_client::vault::{admin_create_group, admin_remove_member};
use keysafe_client::{CacheUse, Precondition};
use keysafe_proto::api::{Access, AclChange};
use keysafe_proto::{DepositName, ErrorCode, GroupName, OrgName};
use keysafe_testkit::{TestServer, TestStorage};

fn name(s: &str) -> DepositName {
    DepositName::parse(s).unwrap()
}

fn no_progress(_: usize, _: usize) {}

async fn group_sharing_admission_and_rotation(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let owner = ts.new_client("acme").await;
    let gw1 = ts.new_client("acme").await;
    let gw2 = ts.new_client("acme").await;
    let acme = OrgName::parse("acme").unwrap();
    let kms = GroupName::parse("kms").unwrap();

    // An administrator creates the group for gw1; the identity is wrapped for gw1 only.
    let g = admin_create_group(
        &ts.admin,
        &acme,
        &kms,
        std::slice::from_ref(&gw1.fingerprint),
    )
    .await
    .unwrap();
    assert_eq!(g.epoch, 1);
    assert!(g.members[0].has_current_key);
    // Nothing the server keeps opens without a member's own key: no wrapped copy for others.
    assert_code(gw2.client.group_keys(&kms).await, ErrorCode::NotFound);

    // A deposit shared with the group: every member reads it, nobody else.
    let vo = owner.vault();
    let n = name("zone/key");
    vo.put(None, &n, b"zone-secret", Precondition::None)
        .await
        .unwrap();
    vo.change_acl(
        None,
        &n,
        AclChange::Grant {
            grantee: "group:kms".into(),
            access: Access::Read,
        },
        &no_progress,
    )
    .await
    .unwrap();
    let owner_fp = owner.fingerprint.as_str().to_owned();
    let got = gw1
        .vault()
        .get(Some(&owner_fp), &n, None, CacheUse::Refresh)
        .await
        .unwrap();
    assert_eq!(&*got.plaintext, b"zone-secret");
    assert_code(
        gw2.client
            .get_of(Some(&owner_fp), &n, None, CacheUse::Refresh)
            .await,
        ErrorCode::NotFound,
    );

    // The administrator adds gw2: the server lets it fetch, but it cannot decrypt yet.
    ts.admin
        .admin_add_member(&acme, &kms, &gw2.fingerprint)
        .await
        .unwrap();
    let v2 = gw2.vault();
    let err = v2
        .get(Some(&owner_fp), &n, None, CacheUse::Refresh)
        .await
        .unwrap_err();
    assert!(
        matches!(err, keysafe_client::ClientError::Decrypt(_)),
        "{err:?}"
    );
    // gw1 admits it (what a KMS gateway does by itself); now it reads.
    let admitted = gw1.vault().admit_pending(&kms).await.unwrap();
    assert_eq!(admitted, vec![gw2.fingerprint.clone()]);
    // The same long-lived vault (a gateway process) picks the new key up without a restart.
    let got = v2
        .get(Some(&owner_fp), &n, None, CacheUse::Refresh)
        .await
        .unwrap();
    assert_eq!(&*got.plaintext, b"zone-secret");

    // Group-owned deposits: any member writes and reads them; others cannot even list.
    v2.put(
        Some("group:kms"),
        &name("hadoop/k1"),
        b"k1-material",
        Precondition::None,
    )
    .await
    .unwrap();
    let got = gw1
        .vault()
        .get(
            Some("group:kms"),
            &name("hadoop/k1"),
            None,
            CacheUse::Refresh,
        )
        .await
        .unwrap();
    assert_eq!(&*got.plaintext, b"k1-material");
    assert_code(
        owner
            .client
            .get_of(
                Some("group:kms"),
                &name("hadoop/k1"),
                None,
                CacheUse::Refresh,
            )
            .await,
        ErrorCode::NotFound,
    );
    let listed = gw1
        .client
        .list(&keysafe_proto::api::ListQuery {
            owner: Some("group:kms".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.deposits.len(), 1);
    assert_eq!(listed.deposits[0].owner, "group:kms");

    // A long-lived vault (a gateway process) holding the group's epoch-1 identity ...
    let v1 = gw1.vault();
    let got = v1
        .get(
            Some("group:kms"),
            &name("hadoop/k1"),
            None,
            CacheUse::Refresh,
        )
        .await
        .unwrap();
    assert_eq!(&*got.plaintext, b"k1-material");
    // Removing gw2 rotates the identity: what is written afterwards is not for gw2's key.
    let g = admin_remove_member(&ts.admin, &acme, &kms, &gw2.fingerprint)
        .await
        .unwrap();
    assert_eq!(g.epoch, 2);
    assert_eq!(g.members.len(), 1);
    // ... reads what is written under epoch 2 with no restart (it fetches the new identity).
    gw1.vault()
        .put(
            Some("group:kms"),
            &name("hadoop/k1"),
            b"rolled",
            Precondition::None,
        )
        .await
        .unwrap();
    let latest = v1
        .get(
            Some("group:kms"),
            &name("hadoop/k1"),
            None,
            CacheUse::Refresh,
        )
        .await
        .unwrap();
    assert_eq!(&*latest.plaintext, b"rolled");
    assert_code(
        gw2.client
            .get_of(
                Some("group:kms"),
                &name("hadoop/k1"),
                None,
                CacheUse::Refresh,
            )
            .await,
        ErrorCode::NotFound,
    );
    // Even holding the ciphertext, gw2's keys (epoch 1) do not open the new version.
    let held = gw1
        .client
        .get_of(
            Some("group:kms"),
            &name("hadoop/k1"),
            None,
            CacheUse::Refresh,
        )
        .await
        .unwrap()
        .payload;
    assert!(v2.decrypt(&held).await.is_err());
}

async fn group_rules(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let a = ts.new_client("acme").await;
    let b = ts.new_client("acme").await;
    let outsider = ts.new_client("globex").await;
    let acme = OrgName::parse("acme").unwrap();
    let g = GroupName::parse("ops").unwrap();
    // A client creates a group in its own organisation, itself included.
    let info = a.vault().create_group(&g, &[]).await.unwrap();
    assert_eq!(info.members.len(), 1);
    assert_code(
        a.vault().create_group(&g, &[]).await,
        ErrorCode::AlreadyExists,
    );
    // Members come from the organisation only.
    assert_code(
        ts.admin
            .admin_add_member(&acme, &g, &outsider.fingerprint)
            .await,
        ErrorCode::NotFound,
    );
    // Only administrators add members; a member cannot admit a non-member.
    assert!(matches!(
        a.vault().admit(&g, &b.fingerprint).await,
        Err(keysafe_client::ClientError::Invalid(_))
    ));
    let keys = a.client.group_keys(&g).await.unwrap();
    assert_code(
        a.client
            .admit(
                &g,
                &keysafe_proto::api::GroupAdmitRequest {
                    member: b.fingerprint.clone(),
                    keys: vec![keysafe_proto::api::WrappedEpoch {
                        epoch: 1,
                        wrapped: keys.keys[0].wrapped.clone(),
                    }],
                },
            )
            .await,
        ErrorCode::NotFound,
    );
    // The last member cannot be removed (nobody could read the group's deposits).
    assert_code(
        admin_remove_member(&ts.admin, &acme, &g, &a.fingerprint).await,
        ErrorCode::InvalidState,
    );
    // Non-members do not see the group at all.
    assert_code(b.client.group(&g).await, ErrorCode::NotFound);
    assert!(b.client.groups().await.unwrap().groups.is_empty());
}

// Every test above runs on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(group_sharing_admission_and_rotation, group_rules,);
