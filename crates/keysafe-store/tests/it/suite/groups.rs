//! Groups: creation, members added, admitted and removed, and the reads of all of it.

use super::*;
use keysafe_core::store::{GroupMemberRecord, WrappedKeyRecord};
use keysafe_proto::GroupName;

pub fn group(name: &str) -> GroupName {
    GroupName::parse(name).unwrap()
}

pub fn wk(epoch: u64, member: char) -> WrappedKeyRecord {
    WrappedKeyRecord {
        epoch,
        member: fp(member),
        wrapped: vec![epoch as u8, member as u8],
    }
}

pub fn create(org_name: &str, name: &str, members: &[char]) -> Mutation {
    Mutation::CreateGroup {
        org: OrgName::parse(org_name).unwrap(),
        name: group(name),
        recipient: "age1epoch1".into(),
        keys: members.iter().map(|m| wk(1, *m)).collect(),
        at: ts(20),
    }
}

pub fn add(name: &str, member: char, at: i64) -> Mutation {
    Mutation::AddGroupMember {
        org: org(),
        name: group(name),
        member: fp(member),
        at: ts(at),
    }
}

fn admit(name: &str, keys: Vec<WrappedKeyRecord>) -> Mutation {
    Mutation::AdmitGroupMember {
        org: org(),
        name: group(name),
        keys,
        at: ts(40),
    }
}

pub fn remove(
    name: &str,
    member: char,
    expected_epoch: u64,
    keys: Vec<WrappedKeyRecord>,
) -> Mutation {
    Mutation::RemoveGroupMember {
        org: org(),
        name: group(name),
        member: fp(member),
        expected_epoch,
        recipient: format!("age1epoch{}", expected_epoch + 1),
        keys,
        at: ts(50),
    }
}

pub async fn groups_are_created_with_members_and_keys(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    s.apply(create("acme", "ops", &['b', 'a'])).await.unwrap();
    let g = s.get_group(&org(), &group("ops")).await.unwrap().unwrap();
    assert_eq!(g.epoch, 1);
    assert_eq!(g.epochs, [(1, "age1epoch1".to_owned())]);
    assert_eq!((g.created_at, g.updated_at), (ts(20), ts(20)));
    // Members by time added, then fingerprint.
    assert_eq!(
        g.members,
        [
            GroupMemberRecord {
                fingerprint: fp('a'),
                epochs: vec![1],
                mac: None
            },
            GroupMemberRecord {
                fingerprint: fp('b'),
                epochs: vec![1],
                mac: None
            },
        ]
    );
    assert_eq!(
        s.group_keys(&org(), &group("ops"), &fp('a')).await.unwrap(),
        [wk(1, 'a')]
    );
    for (m, want, why) in [
        (
            create("acme", "ops", &['a']),
            StoreError::AlreadyExists,
            "name taken",
        ),
        (
            create("nowhere", "ops", &[]),
            StoreError::NotFound,
            "no such organisation",
        ),
        (
            create("acme", "x", &['a', 'f']),
            StoreError::NotFound,
            "no such client",
        ),
        (
            create("acme", "y", &['a', 'a']),
            StoreError::AlreadyExists,
            "a repeated member",
        ),
        (
            Mutation::CreateGroup {
                org: org(),
                name: group("z"),
                recipient: "age1".into(),
                keys: vec![wk(2, 'a')],
                at: ts(20),
            },
            StoreError::NotFound,
            "a key for an epoch other than 1",
        ),
    ] {
        assert_eq!(s.apply(m).await.unwrap_err(), want, "{why}");
    }
    for name in ["x", "y", "z"] {
        assert!(s.get_group(&org(), &group(name)).await.unwrap().is_none());
    }
    // The same name in another organisation is another group.
    s.apply(create_org("beta")).await.unwrap();
    s.apply(create("beta", "ops", &[])).await.unwrap();
    s.apply(create("acme", "Ops2", &['a'])).await.unwrap();
    let all: Vec<(String, String)> = s
        .list_groups(None, None)
        .await
        .unwrap()
        .iter()
        .map(|g| (g.org.to_string(), g.name.to_string()))
        .collect();
    assert_eq!(
        all,
        [
            ("acme".into(), "Ops2".into()),
            ("acme".into(), "ops".into()),
            ("beta".into(), "ops".into())
        ]
    );
    let of_b: Vec<String> = s
        .list_groups(Some(&org()), Some(&fp('b')))
        .await
        .unwrap()
        .iter()
        .map(|g| g.name.to_string())
        .collect();
    assert_eq!(of_b, ["ops"]);
    assert_eq!(
        s.member_groups(&org(), &fp('a'))
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect::<Vec<_>>(),
        [group("Ops2"), group("ops")]
    );
    assert!(s.member_groups(&org(), &fp('f')).await.unwrap().is_empty());
    let beta = OrgName::parse("beta").unwrap();
    assert_eq!(s.list_groups(Some(&beta), None).await.unwrap().len(), 1);
    // A deposit the group owns is keyed by its stored principal, apart from a client's
    // deposit of the same name.
    let owned = DepositKey {
        owner: Principal::Group {
            org: org(),
            name: group("ops"),
        },
        name: DepositName::parse("shared").unwrap(),
    };
    c.put(&owned, None, 1, b"g").await.unwrap();
    c.put(&key('a', "shared"), None, 1, b"a").await.unwrap();
    let d = s.get_deposit(&owned).await.unwrap().unwrap();
    assert_eq!(d.owner, owned.owner);
    let (_, v, _) =
        std::sync::Arc::unwrap_or_clone(s.get_version(&owned, None).await.unwrap().unwrap());
    assert_eq!(v.ciphertext, b"g");
}

pub async fn group_members_are_added_and_admitted(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    s.apply(insert(client_record(fp('c'), "acme", ts(1))))
        .await
        .unwrap();
    s.apply(create("acme", "ops", &['a'])).await.unwrap();
    s.apply(add("ops", 'b', 30)).await.unwrap();
    let g = s.get_group(&org(), &group("ops")).await.unwrap().unwrap();
    assert_eq!(g.updated_at, ts(30));
    assert_eq!(
        g.members[1],
        GroupMemberRecord {
            fingerprint: fp('b'),
            epochs: vec![],
            mac: None
        },
        "added without keys"
    );
    assert_eq!(
        s.apply(add("ops", 'b', 31)).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    assert_eq!(
        s.apply(add("nope", 'b', 31)).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        s.apply(add("ops", 'f', 31)).await.unwrap_err(),
        StoreError::NotFound,
        "no such client"
    );

    s.apply(admit("ops", vec![wk(1, 'b')])).await.unwrap();
    assert_eq!(
        s.group_keys(&org(), &group("ops"), &fp('b')).await.unwrap(),
        [wk(1, 'b')]
    );
    // An identity already stored is kept, not replaced.
    let mut other = wk(1, 'b');
    other.wrapped = vec![0xff];
    s.apply(admit("ops", vec![other])).await.unwrap();
    assert_eq!(
        s.group_keys(&org(), &group("ops"), &fp('b')).await.unwrap(),
        [wk(1, 'b')]
    );
    for (keys, why) in [
        (vec![wk(1, 'c')], "not a member"),
        (vec![wk(1, 'f')], "not a client"),
        (vec![wk(7, 'b')], "no such epoch"),
    ] {
        assert_eq!(
            s.apply(admit("ops", keys)).await.unwrap_err(),
            StoreError::NotFound,
            "{why}"
        );
    }
    assert_eq!(
        s.apply(admit("nope", vec![wk(1, 'b')])).await.unwrap_err(),
        StoreError::NotFound
    );
    assert!(
        s.group_keys(&org(), &group("ops"), &fp('c'))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn removing_a_member_opens_the_next_epoch(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    s.apply(insert(client_record(fp('c'), "acme", ts(1))))
        .await
        .unwrap();
    s.apply(create("acme", "ops", &['a', 'b', 'c']))
        .await
        .unwrap();
    assert_eq!(
        s.apply(remove("ops", 'c', 2, vec![wk(3, 'a')]))
            .await
            .unwrap_err(),
        StoreError::Conflict,
        "the epoch is 1"
    );
    assert_eq!(
        s.apply(remove("ops", 'f', 1, vec![])).await.unwrap_err(),
        StoreError::NotFound,
        "not a member"
    );
    assert_eq!(
        s.apply(remove("nope", 'c', 1, vec![])).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        s.apply(remove("ops", 'c', 1, vec![wk(2, 'a'), wk(2, 'c')]))
            .await
            .unwrap_err(),
        StoreError::NotFound,
        "a key for the removed member"
    );
    let g = s.get_group(&org(), &group("ops")).await.unwrap().unwrap();
    assert_eq!((g.epoch, g.members.len()), (1, 3), "nothing changed");

    s.apply(remove("ops", 'c', 1, vec![wk(2, 'a'), wk(2, 'b')]))
        .await
        .unwrap();
    let g = s.get_group(&org(), &group("ops")).await.unwrap().unwrap();
    assert_eq!(g.epoch, 2);
    assert_eq!(
        g.epochs,
        [(1, "age1epoch1".to_owned()), (2, "age1epoch2".to_owned())]
    );
    assert_eq!(g.updated_at, ts(50));
    assert_eq!(
        g.members,
        [
            GroupMemberRecord {
                fingerprint: fp('a'),
                epochs: vec![1, 2],
                mac: None
            },
            GroupMemberRecord {
                fingerprint: fp('b'),
                epochs: vec![1, 2],
                mac: None
            },
        ]
    );
    assert!(
        s.group_keys(&org(), &group("ops"), &fp('c'))
            .await
            .unwrap()
            .is_empty(),
        "the removed member's identities are gone"
    );
    assert!(s.member_groups(&org(), &fp('c')).await.unwrap().is_empty());
    assert_eq!(
        s.apply(remove("ops", 'b', 1, vec![wk(2, 'a')]))
            .await
            .unwrap_err(),
        StoreError::Conflict,
        "a second removal from the old epoch loses"
    );
}
