//! The end of life: deleting organisations, clients and groups (what blocks each, named; what
//! goes with each, all of it in one change), revoking unused registration tokens, recovering an
//! administrator, the dependents reads behind deletion previews, and clients page by page.

use super::*;
use keysafe_core::store::{
    ClientCursor, ClientListing, Counted, GrantRecord, GroupMemberRecord, GroupRef,
    RegistrationTokenRecord, WrappedKeyRecord,
};
use keysafe_proto::GroupName;
use keysafe_proto::api::Access;

fn group(name: &str) -> GroupName {
    GroupName::parse(name).unwrap()
}

fn gref(name: &str) -> GroupRef {
    GroupRef {
        org: org(),
        name: group(name),
    }
}

fn wk(epoch: u64, member: char) -> WrappedKeyRecord {
    WrappedKeyRecord {
        epoch,
        member: fp(member),
        wrapped: vec![epoch as u8, member as u8],
    }
}

fn create_group(name: &str, members: &[char]) -> Mutation {
    Mutation::CreateGroup {
        org: org(),
        name: group(name),
        recipient: "age1epoch1".into(),
        keys: members.iter().map(|m| wk(1, *m)).collect(),
        at: ts(20),
    }
}

fn grant_to(k: &DepositKey, grantee: Principal, serial: u64) -> Mutation {
    Mutation::SetAcl {
        key: k.clone(),
        expected_current: ver(1),
        expected_acl_serial: serial,
        grants: vec![GrantRecord {
            grantee,
            access: Access::Read,
            granted_by: fp('a'),
            granted_at: ts(30),
            mac: None,
        }],
        replace: vec![],
        at: ts(30),
    }
}

fn group_principal(name: &str) -> Principal {
    Principal::Group {
        org: org(),
        name: group(name),
    }
}

fn token(hash: &str, org_name: &str, created: i64) -> Mutation {
    Mutation::InsertRegistrationToken(RegistrationTokenRecord {
        hash: hash.into(),
        org: OrgName::parse(org_name).unwrap(),
        created_by: fp('a'),
        created_at: ts(created),
        expires_at: ts(1_000),
    })
}

fn delete_client(f: char) -> Mutation {
    Mutation::DeleteClient {
        fingerprint: fp(f),
        at: ts(90),
    }
}

fn delete_group(name: &str) -> Mutation {
    Mutation::DeleteGroup {
        org: org(),
        name: group(name),
    }
}

#[track_caller]
fn in_use(r: Result<Applied, StoreError>, names: &[&str]) {
    match r {
        Err(StoreError::InUse(m)) => {
            for n in names {
                assert!(m.contains(n), "{m:?} does not name {n:?}");
            }
        }
        other => panic!("expected InUse naming {names:?}, got {other:?}"),
    }
}

pub async fn deleting_an_organisation_needs_it_empty(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    s.apply(create_group("ops", &['a'])).await.unwrap();
    // acme has clients a and b and group ops: named in the refusal, nothing changes.
    let refused = s.apply(Mutation::DeleteOrg { name: org() }).await;
    in_use(refused, &["2 clients", fp('a').as_str(), "1 group (ops)"]);
    assert!(s.get_org(&org()).await.unwrap().is_some());
    assert_eq!(
        s.org_dependents(&org()).await.unwrap().unwrap().clients,
        Counted {
            count: 2,
            sample: vec![fp('a').to_string(), fp('b').to_string()],
        }
    );
    // An empty organisation goes with all its registration tokens, used or not.
    s.apply(create_org("empty")).await.unwrap();
    s.apply(token("unused", "empty", 10)).await.unwrap();
    s.apply(token("t-acme", "acme", 10)).await.unwrap();
    let deps = s
        .org_dependents(&OrgName::parse("empty").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deps.unused_tokens, 1);
    assert!(deps.blockers().is_empty());
    s.apply(Mutation::DeleteOrg {
        name: OrgName::parse("empty").unwrap(),
    })
    .await
    .unwrap();
    assert!(
        s.get_org(&OrgName::parse("empty").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.org_dependents(&OrgName::parse("empty").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // Deleted, the name can be taken again, and has no tokens from before.
    s.apply(create_org("empty")).await.unwrap();
    assert!(
        s.list_unused_tokens(&OrgName::parse("empty").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    // Another organisation's tokens stay.
    assert_eq!(s.list_unused_tokens(&org()).await.unwrap().len(), 1);
    assert_eq!(
        s.apply(Mutation::DeleteOrg {
            name: OrgName::parse("nowhere").unwrap()
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
}

pub async fn deleting_a_client_removes_its_grants_memberships_and_keys(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    // a owns a deposit shared with b; b is in group ops with a, both holding epoch 1.
    let k = key('a', "shared");
    c.put(&k, None, 1, b"x").await.unwrap();
    s.apply(grant_to(&k, Principal::Client(fp('b')), 0))
        .await
        .unwrap();
    s.apply(create_group("ops", &['a', 'b'])).await.unwrap();
    let deps = s.client_dependents(&fp('b')).await.unwrap().unwrap();
    assert_eq!(deps.memberships, [gref("ops")]);
    assert_eq!(deps.grants.count, 1);
    assert_eq!(deps.grants.sample, [format!("{}:shared", fp('a'))]);
    assert!(deps.blockers().is_empty(), "{:?}", deps.blockers());

    s.apply(delete_client('b')).await.unwrap();
    assert!(s.get_client(&fp('b')).await.unwrap().is_none());
    assert!(s.get_grants(&k).await.unwrap().is_empty());
    let d = s.get_deposit(&k).await.unwrap().unwrap();
    assert_eq!(d.acl_serial, 2, "the ACL changed");
    assert_eq!(d.updated_at, ts(90));
    let g = s.get_group(&org(), &group("ops")).await.unwrap().unwrap();
    assert_eq!(
        g.members,
        [GroupMemberRecord {
            fingerprint: fp('a'),
            epochs: vec![1],
            mac: None
        }]
    );
    assert_eq!((g.epoch, g.updated_at), (1, ts(90)));
    assert!(
        s.group_keys(&org(), &group("ops"), &fp('b'))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.list_shared(&[Principal::Client(fp('b'))])
            .await
            .unwrap()
            .is_empty()
    );
    // A put prepared for the old recipient set loses.
    assert_eq!(
        s.apply(Mutation::PutVersion {
            org: org(),
            key: k.clone(),
            expected_current: Some(ver(1)),
            expected_acl_serial: Some(1),
            version: version(2, b"y"),
        })
        .await
        .unwrap_err(),
        StoreError::VersionConflict {
            current: Some(ver(1))
        }
    );
    // The fingerprint registers afresh; nothing of the old client comes back.
    s.apply(insert(client_record(fp('b'), "acme", ts(95))))
        .await
        .unwrap();
    assert!(s.member_groups(&org(), &fp('b')).await.unwrap().is_empty());
    s.apply(delete_client('b')).await.unwrap();
    assert_eq!(
        s.apply(delete_client('b')).await.unwrap_err(),
        StoreError::NotFound
    );
    assert!(s.client_dependents(&fp('b')).await.unwrap().is_none());
}

pub async fn deleting_a_client_is_refused_while_something_depends_on_it(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    // a owns two deposits, one soft-deleted.
    c.put(&key('a', "live"), None, 1, b"x").await.unwrap();
    c.put(&key('a', "gone"), None, 1, b"x").await.unwrap();
    s.apply(Mutation::SetDeleted {
        key: key('a', "gone"),
        deleted: true,
        at: ts(40),
    })
    .await
    .unwrap();
    in_use(
        s.apply(delete_client('a')).await,
        &["2 deposits (gone, live)"],
    );
    assert!(s.get_client(&fp('a')).await.unwrap().is_some());

    // b alone holds group ops' current key (c was added but never admitted).
    s.apply(insert(client_record(fp('c'), "acme", ts(1))))
        .await
        .unwrap();
    s.apply(create_group("ops", &['b'])).await.unwrap();
    s.apply(Mutation::AddGroupMember {
        org: org(),
        name: group("ops"),
        member: fp('c'),
        at: ts(21),
    })
    .await
    .unwrap();
    let deps = s.client_dependents(&fp('b')).await.unwrap().unwrap();
    assert_eq!(deps.sole_key_holder_of, [gref("ops")]);
    in_use(s.apply(delete_client('b')).await, &["group acme/ops"]);
    // c holds no key: it goes, and b stays the only key holder.
    s.apply(delete_client('c')).await.unwrap();
    // Once another member holds the current key, b may go.
    s.apply(insert(client_record(fp('c'), "acme", ts(1))))
        .await
        .unwrap();
    s.apply(Mutation::AddGroupMember {
        org: org(),
        name: group("ops"),
        member: fp('c'),
        at: ts(22),
    })
    .await
    .unwrap();
    s.apply(Mutation::AdmitGroupMember {
        org: org(),
        name: group("ops"),
        keys: vec![wk(1, 'c')],
        at: ts(23),
    })
    .await
    .unwrap();
    assert!(
        s.client_dependents(&fp('b'))
            .await
            .unwrap()
            .unwrap()
            .sole_key_holder_of
            .is_empty()
    );
    s.apply(delete_client('b')).await.unwrap();

    // The last active administrator stays; with another active one, it may go.
    for f in ['d', 'e'] {
        let mut r = client_record(fp(f), "acme", ts(1));
        r.role = ClientRole::Admin;
        s.apply(insert(r)).await.unwrap();
    }
    s.apply(Mutation::SetClientState {
        fingerprint: fp('e'),
        state: ClientState::Disabled,
        at: ts(50),
    })
    .await
    .unwrap();
    in_use(
        s.apply(delete_client('d')).await,
        &["last active administrator"],
    );
    // A disabled administrator is not the last active one.
    s.apply(delete_client('e')).await.unwrap();
    let mut f = client_record(fp('f'), "acme", ts(1));
    f.role = ClientRole::Admin;
    s.apply(insert(f)).await.unwrap();
    s.apply(delete_client('d')).await.unwrap();
}

pub async fn deleting_a_group_needs_no_deposits_and_no_grants(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    s.apply(create_group("ops", &['a', 'b'])).await.unwrap();
    let owned = DepositKey {
        owner: group_principal("ops"),
        name: DepositName::parse("db").unwrap(),
    };
    c.put(&owned, None, 1, b"x").await.unwrap();
    in_use(s.apply(delete_group("ops")).await, &["1 deposit (db)"]);
    s.apply(Mutation::Purge { key: owned }).await.unwrap();
    // A grantee of another deposit: named with its owner.
    let k = key('a', "shared");
    c.put(&k, None, 1, b"x").await.unwrap();
    s.apply(grant_to(&k, group_principal("ops"), 0))
        .await
        .unwrap();
    in_use(
        s.apply(delete_group("ops")).await,
        &["grantee of 1 deposit", &format!("{}:shared", fp('a'))],
    );
    assert!(s.get_group(&org(), &group("ops")).await.unwrap().is_some());
    s.apply(Mutation::SetAcl {
        key: k.clone(),
        expected_current: ver(1),
        expected_acl_serial: 1,
        grants: vec![],
        replace: vec![],
        at: ts(31),
    })
    .await
    .unwrap();
    let deps = s
        .group_dependents(&org(), &group("ops"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deps.members, 2);
    assert!(deps.blockers().is_empty());
    s.apply(delete_group("ops")).await.unwrap();
    assert!(s.get_group(&org(), &group("ops")).await.unwrap().is_none());
    assert!(s.member_groups(&org(), &fp('a')).await.unwrap().is_empty());
    assert!(
        s.group_keys(&org(), &group("ops"), &fp('a'))
            .await
            .unwrap()
            .is_empty()
    );
    // The members stay clients; the name starts again at epoch 1.
    assert!(s.get_client(&fp('a')).await.unwrap().is_some());
    s.apply(create_group("ops", &['b'])).await.unwrap();
    let g = s.get_group(&org(), &group("ops")).await.unwrap().unwrap();
    assert_eq!((g.epoch, g.members.len()), (1, 1));
    assert_eq!(
        s.apply(delete_group("nothing")).await.unwrap_err(),
        StoreError::NotFound
    );
    assert!(
        s.group_dependents(&org(), &group("nothing"))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn unused_registration_tokens_are_listed_and_revoked(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    s.apply(create_org("beta")).await.unwrap();
    s.apply(token("t3", "acme", 12)).await.unwrap();
    s.apply(token("t1", "acme", 11)).await.unwrap();
    s.apply(token("t2", "acme", 11)).await.unwrap();
    s.apply(token("tb", "beta", 11)).await.unwrap();
    // t2 registers client c: no longer unused.
    s.apply(Mutation::InsertClient {
        client: client_record(fp('c'), "acme", ts(20)),
        consume_token: Some("t2".into()),
    })
    .await
    .unwrap();
    let hashes =
        |v: Vec<RegistrationTokenRecord>| v.into_iter().map(|t| t.hash).collect::<Vec<_>>();
    // By creation time, then hash.
    assert_eq!(
        hashes(s.list_unused_tokens(&org()).await.unwrap()),
        ["t1", "t3"]
    );
    // Used, foreign and unknown tokens are left alone.
    let revoke = |org_name: &str, h: &[&str]| Mutation::RevokeRegistrationTokens {
        org: OrgName::parse(org_name).unwrap(),
        hashes: h.iter().map(|h| h.to_string()).collect(),
    };
    assert_eq!(
        s.apply(revoke("acme", &["t2", "tb", "unknown", "t3"]))
            .await
            .unwrap(),
        Applied::Revoked(1)
    );
    assert_eq!(hashes(s.list_unused_tokens(&org()).await.unwrap()), ["t1"]);
    assert_eq!(
        hashes(
            s.list_unused_tokens(&OrgName::parse("beta").unwrap())
                .await
                .unwrap()
        ),
        ["tb"]
    );
    assert_eq!(
        s.apply(revoke("acme", &[])).await.unwrap(),
        Applied::Revoked(0)
    );
    assert_eq!(
        s.apply(revoke("nowhere", &["t1"])).await.unwrap_err(),
        StoreError::NotFound
    );
    // A revoked token registers nobody.
    assert_eq!(
        s.apply(Mutation::InsertClient {
            client: client_record(fp('d'), "acme", ts(20)),
            consume_token: Some("t3".into()),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    assert!(
        s.list_unused_tokens(&OrgName::parse("nowhere").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn recovering_an_administrator_restores_any_client(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    let mut rec = client_record(fp('c'), "acme", ts(1));
    rec.token = TokenState {
        counter: 7,
        hash: Some("h".into()),
        recent: vec![],
        rotated_at: ts(2),
        confirmed: true,
        derivation: Some(TokenDerivation {
            kek_version: 1,
            salt: vec![1; 16],
        }),
    };
    s.apply(insert(rec)).await.unwrap();
    s.apply(Mutation::MarkSuspectedClone {
        fingerprint: fp('c'),
        reason: "diverged".into(),
        at: ts(3),
    })
    .await
    .unwrap();
    s.apply(Mutation::RecoverAdmin {
        fingerprint: fp('c'),
        at: ts(4),
    })
    .await
    .unwrap();
    let r = s.get_client(&fp('c')).await.unwrap().unwrap();
    assert_eq!((r.state, r.role), (ClientState::Active, ClientRole::Admin));
    assert_eq!(r.state_reason, None);
    assert_eq!(r.token.counter, 7, "the counter is kept");
    assert_eq!(r.token.hash, None);
    assert!(!r.token.confirmed);
    assert_eq!(r.token.derivation, None);
    assert_eq!(r.updated_at, ts(4));
    // Disabled or pending, an ordinary client becomes an active administrator too.
    s.apply(Mutation::SetClientState {
        fingerprint: fp('b'),
        state: ClientState::Disabled,
        at: ts(5),
    })
    .await
    .unwrap();
    s.apply(Mutation::RecoverAdmin {
        fingerprint: fp('b'),
        at: ts(6),
    })
    .await
    .unwrap();
    let r = s.get_client(&fp('b')).await.unwrap().unwrap();
    assert_eq!((r.state, r.role), (ClientState::Active, ClientRole::Admin));
    assert_eq!(
        s.apply(Mutation::RecoverAdmin {
            fingerprint: fp('f'),
            at: ts(6),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
}

pub async fn clients_page_through_in_listing_order(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    s.apply(create_org("beta")).await.unwrap();
    s.apply(create_org("Zeta")).await.unwrap();
    // Same registration time in one organisation: the fingerprint decides.
    for (f, o, at) in [
        ('e', "beta", 5),
        ('d', "beta", 5),
        ('c', "beta", 3),
        ('f', "Zeta", 9),
        ('9', "acme", 2),
    ] {
        s.apply(insert(client_record(fp(f), o, ts(at))))
            .await
            .unwrap();
    }
    s.apply(Mutation::SetClientState {
        fingerprint: fp('d'),
        state: ClientState::Disabled,
        at: ts(6),
    })
    .await
    .unwrap();
    let all = s.list_clients(None, None).await.unwrap();
    let fps = |v: &[ClientRecord]| v.iter().map(|r| r.fingerprint.clone()).collect::<Vec<_>>();
    // "Zeta" sorts before "acme" as bytes.
    assert_eq!(
        fps(&all),
        [
            fp('f'),
            fp('a'),
            fp('b'),
            fp('9'),
            fp('c'),
            fp('d'),
            fp('e')
        ]
        .to_vec()
    );
    for limit in [1, 2, 3, 7, 100] {
        let mut paged = Vec::new();
        let mut after: Option<ClientCursor> = None;
        loop {
            let page = s
                .list_clients_page(ClientListing {
                    org: None,
                    state: None,
                    after: after.as_ref(),
                    limit,
                })
                .await
                .unwrap();
            assert!(page.len() <= limit as usize);
            let Some(last) = page.last() else { break };
            after = Some(ClientCursor::after(last));
            paged.extend(page);
        }
        assert_eq!(fps(&paged), fps(&all), "limit {limit}");
    }
    // Filters, and a cursor whose client was deleted meanwhile still continues.
    let beta = OrgName::parse("beta").unwrap();
    let first = s
        .list_clients_page(ClientListing {
            org: Some(&beta),
            state: None,
            after: None,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(fps(&first), [fp('c')]);
    let cursor = ClientCursor::after(&first[0]);
    s.apply(delete_client('c')).await.unwrap();
    let rest = s
        .list_clients_page(ClientListing {
            org: Some(&beta),
            state: Some(ClientState::Active),
            after: Some(&cursor),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(fps(&rest), [fp('e')]);
}
