//! Conformance cases for organisations, clients, registration and sequenced tokens (with
//! rotations racing from two handles), and groups with their epochs.

use super::*;

pub async fn uniqueness_and_references(f: &dyn Fixture) {
    let s = f.store();
    let now = ts(5);
    assert_eq!(
        s.apply(Mutation::CreateOrg(org_record("acme", AuthMode::Approval)))
            .await
            .unwrap_err(),
        StoreError::AlreadyExists
    );
    let mut c = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(
        s.apply(insert(c.clone())).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    c.fingerprint = fp('c');
    c.org = OrgName::parse("nowhere").unwrap();
    assert_eq!(s.apply(insert(c)).await.unwrap_err(), StoreError::NotFound);
    assert!(s.get_client(&fp('c')).await.unwrap().is_none());
    assert_eq!(
        s.apply(Mutation::SetClientState {
            fingerprint: fp('f'),
            state: ClientState::Disabled,
            at: now
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    s.apply(Mutation::SetClientState {
        fingerprint: fp('a'),
        state: ClientState::Disabled,
        at: now,
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_client(&fp('a')).await.unwrap().unwrap().state,
        ClientState::Disabled
    );
    assert_eq!(
        s.list_clients(Some(&org()), Some(ClientState::Active))
            .await
            .unwrap()
            .len(),
        1
    );
    s.apply(kek(1, "file")).await.unwrap();
    assert_eq!(
        s.apply(Mutation::InsertKek(KekRecord {
            version: 1,
            seal: "file".into(),
            wrapped: vec![2],
            created_at: now
        }))
        .await
        .unwrap_err(),
        StoreError::AlreadyExists
    );
    let keks = s.load_keks().await.unwrap();
    assert_eq!(
        keks.iter()
            .map(|k| (k.version, k.seal.as_str(), k.wrapped.clone()))
            .collect::<Vec<_>>(),
        vec![(1, "file", vec![1]), (1, "test-fixture", vec![1])],
        "ordered by version, then seal"
    );
}

pub async fn token_rotation_is_compare_and_set_for_active_clients(f: &dyn Fixture) {
    let s = f.store();
    let rotate = |expected: u64, counter: u64, at: i64| Mutation::RotateToken {
        fingerprint: fp('a'),
        expected_counter: expected,
        token: TokenState {
            counter,
            hash: Some(format!("h{counter}")),
            recent: vec![keysafe_core::store::ReplacedToken {
                hash: format!("h{}", counter.saturating_sub(1)),
                replaced_at: ts(at),
            }],
            rotated_at: ts(at),
        },
        at: ts(at),
    };
    s.apply(rotate(0, 1, 10)).await.unwrap();
    let c = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(c.token.counter, 1);
    assert_eq!(c.token.hash.as_deref(), Some("h1"));
    assert_eq!(c.token.recent.len(), 1);
    assert_eq!(c.token.rotated_at, ts(10));
    assert_eq!(c.last_seen_at, Some(ts(10)));
    assert_eq!(
        s.apply(rotate(0, 1, 11)).await.unwrap_err(),
        StoreError::Conflict,
        "the counter moved"
    );
    assert_eq!(
        s.apply(Mutation::RotateToken {
            fingerprint: fp('9'),
            expected_counter: 0,
            token: TokenState {
                counter: 1,
                hash: None,
                recent: vec![],
                rotated_at: ts(1)
            },
            at: ts(1),
        })
        .await
        .unwrap_err(),
        StoreError::Conflict
    );
    // A suspected clone gets no rotation until an administrator resets its token.
    s.apply(Mutation::MarkSuspectedClone {
        fingerprint: fp('a'),
        reason: "token reuse".into(),
        at: ts(12),
    })
    .await
    .unwrap();
    let c = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(c.state, ClientState::SuspectedClone);
    assert_eq!(c.state_reason.as_deref(), Some("token reuse"));
    assert_eq!(
        s.apply(rotate(1, 2, 13)).await.unwrap_err(),
        StoreError::Conflict
    );
    s.apply(Mutation::ResetToken {
        fingerprint: fp('a'),
        at: ts(14),
    })
    .await
    .unwrap();
    let c = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(c.state, ClientState::Active);
    assert_eq!(c.state_reason, None);
    assert_eq!(c.token.hash, None);
    assert!(c.token.recent.is_empty());
    assert_eq!(c.token.counter, 1, "the counter is kept");
    s.apply(rotate(1, 2, 15)).await.unwrap();
    // A reset does not revive a disabled client.
    s.apply(Mutation::SetClientState {
        fingerprint: fp('a'),
        state: ClientState::Disabled,
        at: ts(16),
    })
    .await
    .unwrap();
    s.apply(Mutation::ResetToken {
        fingerprint: fp('a'),
        at: ts(17),
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_client(&fp('a')).await.unwrap().unwrap().state,
        ClientState::Disabled
    );
    assert_eq!(
        s.apply(rotate(2, 3, 18)).await.unwrap_err(),
        StoreError::Conflict
    );
    for m in [
        Mutation::MarkSuspectedClone {
            fingerprint: fp('9'),
            reason: "x".into(),
            at: ts(1),
        },
        Mutation::ResetToken {
            fingerprint: fp('9'),
            at: ts(1),
        },
    ] {
        assert_eq!(s.apply(m).await.unwrap_err(), StoreError::NotFound);
    }
}

pub async fn concurrent_rotations_from_two_handles_exactly_one_wins(f: &dyn Fixture) {
    let handles = [f.store(), f.open_again().await];
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let s = handles[(i % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            s.apply(Mutation::RotateToken {
                fingerprint: fp('a'),
                expected_counter: 0,
                token: TokenState {
                    counter: 1,
                    hash: Some(format!("winner{i}")),
                    recent: vec![],
                    rotated_at: ts(20),
                },
                at: ts(20),
            })
            .await
        }));
    }
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(_) => winners.push(i),
            Err(e) => assert_eq!(e, StoreError::Conflict),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rotation wins");
    let c = handles[1].get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(c.token.counter, 1);
    assert_eq!(c.token.hash, Some(format!("winner{}", winners[0])));
}

/// One-time tokens, ACL swaps and group epochs are compare-and-set too: of several changes
/// from the same state, through two handles at once, exactly one applies.
pub async fn concurrent_registrations_acl_swaps_and_member_removals_exactly_one_wins(
    f: &dyn Fixture,
) {
    let handles = [f.store(), f.open_again().await];
    let s = &handles[0];
    s.apply(Mutation::InsertRegistrationToken(RegistrationTokenRecord {
        hash: "t-race".into(),
        org: org(),
        created_by: fp('a'),
        created_at: ts(1),
        expires_at: ts(1_000),
    }))
    .await
    .unwrap();
    let candidates = ['1', '2', '3', '4', '5', '6', '7', '8'];
    let results = race(&handles, 8, |i| Mutation::InsertClient {
        client: client_record(fp(candidates[i]), ts(10)),
        consume_token: Some("t-race".into()),
    })
    .await;
    let won = one_winner(&results, &StoreError::NotFound);
    for (i, c) in candidates.iter().enumerate() {
        assert_eq!(s.get_client(&fp(*c)).await.unwrap().is_some(), i == won);
    }

    let k = key('a', "acl-race");
    put(&**s, &k, None, 1, b"x").await.unwrap();
    let results = race(&handles, 8, |i| Mutation::SetAcl {
        key: k.clone(),
        expected_current: ver(1),
        expected_acl_serial: 0,
        grants: vec![GrantRecord {
            grantee: Principal::Client(fp(candidates[i])),
            access: Access::Read,
            granted_by: fp('a'),
            granted_at: ts(20),
        }],
        replace: vec![],
        at: ts(20),
    })
    .await;
    let won = one_winner(&results, &StoreError::Conflict);
    assert_eq!(s.get_deposit(&k).await.unwrap().unwrap().acl_serial, 1);
    let grants = s.get_grants(&k).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].grantee, Principal::Client(fp(candidates[won])));

    let g = GroupName::parse("race").unwrap();
    s.apply(Mutation::CreateGroup {
        org: org(),
        name: g.clone(),
        recipient: "age1one".into(),
        keys: vec![
            WrappedKeyRecord {
                epoch: 1,
                member: fp('a'),
                wrapped: vec![1],
            },
            WrappedKeyRecord {
                epoch: 1,
                member: fp('b'),
                wrapped: vec![2],
            },
        ],
        at: ts(30),
    })
    .await
    .unwrap();
    let results = race(&handles, 8, |i| Mutation::RemoveGroupMember {
        org: org(),
        name: g.clone(),
        member: fp(if i % 2 == 0 { 'a' } else { 'b' }),
        expected_epoch: 1,
        recipient: format!("age1two-{i}"),
        keys: vec![],
        at: ts(31),
    })
    .await;
    let won = one_winner(&results, &StoreError::Conflict);
    let group = s.get_group(&org(), &g).await.unwrap().unwrap();
    assert_eq!(group.epoch, 2);
    assert_eq!(group.epochs[1].1, format!("age1two-{won}"));
    assert_eq!(group.members.len(), 1);
}

pub async fn registration_tokens_are_single_use_unexpired_and_per_org(f: &dyn Fixture) {
    let s = f.store();
    s.apply(Mutation::CreateOrg(org_record("other", AuthMode::Approval)))
        .await
        .unwrap();
    let token = |hash: &str, org: &str, expires: i64| {
        Mutation::InsertRegistrationToken(RegistrationTokenRecord {
            hash: hash.into(),
            org: OrgName::parse(org).unwrap(),
            created_by: fp('a'),
            created_at: ts(1),
            expires_at: ts(expires),
        })
    };
    s.apply(token("t-acme", "acme", 100)).await.unwrap();
    s.apply(token("t-old", "acme", 50)).await.unwrap();
    assert_eq!(
        s.apply(token("t-acme", "acme", 100)).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    assert_eq!(
        s.apply(token("t-x", "nowhere", 100)).await.unwrap_err(),
        StoreError::NotFound
    );
    let register = |c: char, hash: &str, at: i64| Mutation::InsertClient {
        client: client_record(fp(c), ts(at)),
        consume_token: Some(hash.into()),
    };
    // Expired (at or after expiry), unknown, or for another organisation: refused, nothing made.
    for (hash, at) in [("t-old", 50), ("t-unknown", 10)] {
        assert_eq!(
            s.apply(register('c', hash, at)).await.unwrap_err(),
            StoreError::NotFound
        );
    }
    let mut elsewhere = client_record(fp('c'), ts(10));
    elsewhere.org = OrgName::parse("other").unwrap();
    assert_eq!(
        s.apply(Mutation::InsertClient {
            client: elsewhere,
            consume_token: Some("t-acme".into()),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    assert!(s.get_client(&fp('c')).await.unwrap().is_none());
    s.apply(register('c', "t-acme", 10)).await.unwrap();
    assert!(s.get_client(&fp('c')).await.unwrap().is_some());
    assert_eq!(
        s.apply(register('d', "t-acme", 11)).await.unwrap_err(),
        StoreError::NotFound,
        "used once"
    );
    // A registration that fails on the client insert leaves the token unused.
    s.apply(token("t-two", "acme", 100)).await.unwrap();
    assert_eq!(
        s.apply(register('c', "t-two", 12)).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    s.apply(register('e', "t-two", 13)).await.unwrap();
}

pub async fn disable_unactivated_selects_never_seen_ordinary_clients(f: &dyn Fixture) {
    let s = f.store();
    // a, b: active, created at 1, never seen (seeded).
    let mut pending = client_record(fp('c'), ts(1));
    pending.state = ClientState::Pending;
    let mut admin = client_record(fp('d'), ts(1));
    admin.role = ClientRole::Admin;
    let mut seen = client_record(fp('e'), ts(1));
    seen.last_seen_at = Some(ts(3));
    let young = client_record(fp('f'), ts(100));
    let mut disabled = client_record(fp('0'), ts(1));
    disabled.state = ClientState::Disabled;
    for c in [pending, admin, seen, young, disabled] {
        s.apply(insert(c)).await.unwrap();
    }
    let applied = s
        .apply(Mutation::DisableUnactivated {
            registered_before: ts(50),
            at: ts(60),
        })
        .await
        .unwrap();
    let Applied::Clients(mut fps) = applied else {
        panic!("{applied:?}")
    };
    fps.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(fps, vec![fp('a'), fp('b'), fp('c')]);
    for (c, state) in [
        ('a', ClientState::Disabled),
        ('c', ClientState::Disabled),
        ('d', ClientState::Active),
        ('e', ClientState::Active),
        ('f', ClientState::Active),
    ] {
        let r = s.get_client(&fp(c)).await.unwrap().unwrap();
        assert_eq!(r.state, state, "client {c}");
        if state == ClientState::Disabled {
            assert_eq!(r.updated_at, ts(60));
            assert!(r.state_reason.is_some());
        }
    }
    assert_eq!(
        s.apply(Mutation::DisableUnactivated {
            registered_before: ts(50),
            at: ts(61),
        })
        .await
        .unwrap(),
        Applied::Clients(vec![])
    );
}

pub async fn org_auth_roles_and_client_listing(f: &dyn Fixture) {
    let s = f.store();
    s.apply(Mutation::CreateOrg(org_record("Zeta", AuthMode::Approval)))
        .await
        .unwrap();
    s.apply(Mutation::CreateOrg(org_record("beta", AuthMode::Approval)))
        .await
        .unwrap();
    assert_eq!(
        s.list_orgs()
            .await
            .unwrap()
            .iter()
            .map(|o| o.name.to_string())
            .collect::<Vec<_>>(),
        ["Zeta", "acme", "beta"],
        "byte order"
    );
    s.apply(Mutation::SetOrgAuth {
        name: org(),
        mode: AuthMode::Approval,
        auth_hash: None,
        at: ts(7),
    })
    .await
    .unwrap();
    let o = s.get_org(&org()).await.unwrap().unwrap();
    assert_eq!(
        (o.auth_mode, o.auth_hash, o.updated_at, o.created_at),
        (AuthMode::Approval, None, ts(7), ts(1))
    );
    assert_eq!(o.contacts, ["sec@example.com"]);
    assert!(
        s.get_org(&OrgName::parse("nowhere").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.apply(Mutation::SetOrgAuth {
            name: OrgName::parse("nowhere").unwrap(),
            mode: AuthMode::Approval,
            auth_hash: None,
            at: ts(7),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    s.apply(Mutation::SetClientRole {
        fingerprint: fp('b'),
        role: ClientRole::Admin,
        at: ts(8),
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_client(&fp('b')).await.unwrap().unwrap().role,
        ClientRole::Admin
    );
    assert_eq!(
        s.apply(Mutation::SetClientRole {
            fingerprint: fp('9'),
            role: ClientRole::Admin,
            at: ts(8),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    let mut beta = client_record(fp('c'), ts(0));
    beta.org = OrgName::parse("beta").unwrap();
    beta.name = Some(keysafe_proto::ClientName::parse("web-1").unwrap());
    beta.recipient = Some("age1xyz".into());
    s.apply(insert(beta)).await.unwrap();
    // Ordered by organisation, then registration time, then fingerprint.
    assert_eq!(
        s.list_clients(None, None)
            .await
            .unwrap()
            .iter()
            .map(|c| c.fingerprint.clone())
            .collect::<Vec<_>>(),
        vec![fp('a'), fp('b'), fp('c')]
    );
    let c = s.get_client(&fp('c')).await.unwrap().unwrap();
    assert_eq!(c.name.unwrap().as_str(), "web-1");
    assert_eq!(c.recipient.as_deref(), Some("age1xyz"));
    assert_eq!(c.cert_der, vec![1, 2, 3]);
    assert_eq!(
        s.list_clients(Some(&OrgName::parse("beta").unwrap()), None)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn groups_keep_epochs_members_and_wrapped_keys(f: &dyn Fixture) {
    let s = f.store();
    let g = GroupName::parse("ops").unwrap();
    let wk = |epoch: u64, member: char| WrappedKeyRecord {
        epoch,
        member: fp(member),
        wrapped: vec![epoch as u8, member as u8],
    };
    let create = Mutation::CreateGroup {
        org: org(),
        name: g.clone(),
        recipient: "age1epoch1".into(),
        keys: vec![wk(1, 'a')],
        at: ts(10),
    };
    s.apply(create.clone()).await.unwrap();
    assert_eq!(
        s.apply(create).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    assert_eq!(
        s.apply(Mutation::CreateGroup {
            org: OrgName::parse("nowhere").unwrap(),
            name: g.clone(),
            recipient: "r".into(),
            keys: vec![],
            at: ts(10),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    let add = |member: char, org: OrgName, name: GroupName| Mutation::AddGroupMember {
        org,
        name,
        member: fp(member),
        at: ts(11),
    };
    s.apply(add('b', org(), g.clone())).await.unwrap();
    assert_eq!(
        s.apply(add('b', org(), g.clone())).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    assert_eq!(
        s.apply(add('9', org(), g.clone())).await.unwrap_err(),
        StoreError::NotFound,
        "no such client"
    );
    assert_eq!(
        s.apply(add('b', org(), GroupName::parse("none").unwrap()))
            .await
            .unwrap_err(),
        StoreError::NotFound,
        "no such group"
    );
    // Admission stores keys for members only, keeps what exists.
    s.apply(Mutation::AdmitGroupMember {
        org: org(),
        name: g.clone(),
        keys: vec![wk(1, 'b'), wk(1, 'a')],
        at: ts(12),
    })
    .await
    .unwrap();
    let mut not_member = wk(1, 'b');
    not_member.member = fp('9');
    s.apply(Mutation::AdmitGroupMember {
        org: org(),
        name: g.clone(),
        keys: vec![not_member],
        at: ts(12),
    })
    .await
    .unwrap();
    assert_eq!(
        s.group_keys(&org(), &g, &fp('b')).await.unwrap(),
        vec![wk(1, 'b')]
    );
    assert!(s.group_keys(&org(), &g, &fp('9')).await.unwrap().is_empty());
    assert_eq!(
        s.apply(Mutation::AdmitGroupMember {
            org: org(),
            name: GroupName::parse("none").unwrap(),
            keys: vec![],
            at: ts(12),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    let group = s.get_group(&org(), &g).await.unwrap().unwrap();
    assert_eq!(group.epoch, 1);
    assert_eq!(group.epochs, vec![(1, "age1epoch1".to_owned())]);
    assert_eq!(
        group
            .members
            .iter()
            .map(|m| (m.fingerprint.clone(), m.epochs.clone()))
            .collect::<Vec<_>>(),
        vec![(fp('a'), vec![1]), (fp('b'), vec![1])]
    );
    assert_eq!(group.created_at, ts(10));
    assert_eq!(group.updated_at, ts(12));
    // Removal opens the next epoch only if the caller saw the current one.
    let remove = |member: char, expected_epoch: u64| Mutation::RemoveGroupMember {
        org: org(),
        name: g.clone(),
        member: fp(member),
        expected_epoch,
        recipient: "age1epoch2".into(),
        keys: vec![wk(2, 'b')],
        at: ts(13),
    };
    assert_eq!(
        s.apply(remove('a', 2)).await.unwrap_err(),
        StoreError::Conflict
    );
    assert_eq!(
        s.apply(remove('9', 1)).await.unwrap_err(),
        StoreError::NotFound
    );
    s.apply(remove('a', 1)).await.unwrap();
    assert_eq!(
        s.apply(remove('a', 1)).await.unwrap_err(),
        StoreError::Conflict
    );
    let group = s.get_group(&org(), &g).await.unwrap().unwrap();
    assert_eq!(group.epoch, 2);
    assert_eq!(group.epochs.len(), 2);
    assert_eq!(
        group
            .members
            .iter()
            .map(|m| (m.fingerprint.clone(), m.epochs.clone()))
            .collect::<Vec<_>>(),
        vec![(fp('b'), vec![1, 2])]
    );
    assert!(s.group_keys(&org(), &g, &fp('a')).await.unwrap().is_empty());
    // Listing and membership.
    s.apply(Mutation::CreateGroup {
        org: org(),
        name: GroupName::parse("dev").unwrap(),
        recipient: "age1dev".into(),
        keys: vec![wk(1, 'a')],
        at: ts(14),
    })
    .await
    .unwrap();
    let names = |gs: Vec<keysafe_core::store::GroupRecord>| {
        gs.into_iter()
            .map(|g| g.name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(s.list_groups(None, None).await.unwrap()),
        ["dev", "ops"]
    );
    assert_eq!(
        names(s.list_groups(Some(&org()), Some(&fp('a'))).await.unwrap()),
        ["dev"]
    );
    assert_eq!(
        s.member_groups(&org(), &fp('b')).await.unwrap(),
        vec![g.clone()]
    );
    assert!(
        s.get_group(&org(), &GroupName::parse("none").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // A deposit owned by the group is keyed by its stored principal.
    let owned = DepositKey {
        owner: Principal::Group {
            org: org(),
            name: g.clone(),
        },
        name: DepositName::parse("shared").unwrap(),
    };
    s.apply(Mutation::PutVersion {
        org: org(),
        key: owned.clone(),
        expected_current: None,
        expected_acl_serial: None,
        version: version(1, b"g"),
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_deposit(&owned).await.unwrap().unwrap().owner,
        owned.owner
    );
}
