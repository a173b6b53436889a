//! Organisations, clients, registration tokens and sequenced tokens.

use super::*;
use keysafe_core::store::{RegistrationTokenRecord, ReplacedToken};

pub async fn orgs_are_unique_and_take_auth_changes(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    assert_eq!(
        s.apply(create_org("acme")).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    // Listed by name, in bytes: upper case before lower case.
    s.apply(create_org("Zeta")).await.unwrap();
    s.apply(create_org("beta")).await.unwrap();
    let names: Vec<String> = s
        .list_orgs()
        .await
        .unwrap()
        .iter()
        .map(|o| o.name.to_string())
        .collect();
    assert_eq!(names, ["Zeta", "acme", "beta"]);
    let before = s.get_org(&org()).await.unwrap().unwrap();
    assert_eq!(before.contacts, ["ops@example.com"]);
    s.apply(Mutation::SetOrgAuth {
        name: org(),
        mode: AuthMode::Approval,
        auth_hash: None,
        at: ts(50),
    })
    .await
    .unwrap();
    let after = s.get_org(&org()).await.unwrap().unwrap();
    assert_eq!(after.auth_mode, AuthMode::Approval);
    assert_eq!(after.auth_hash, None);
    assert_eq!(after.updated_at, ts(50));
    assert_eq!(after.created_at, before.created_at);
    assert_eq!(
        s.apply(Mutation::SetOrgAuth {
            name: OrgName::parse("nowhere").unwrap(),
            mode: AuthMode::Approval,
            auth_hash: None,
            at: ts(50),
        })
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    assert!(
        s.get_org(&OrgName::parse("nowhere").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn clients_are_unique_and_need_their_organisation(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    let mut rec = client_record(fp('c'), "acme", ts(7));
    rec.name = Some(keysafe_proto::ClientName::parse("web-1").unwrap());
    rec.recipient = Some("age1xyz".into());
    rec.state = ClientState::Pending;
    rec.role = ClientRole::Admin;
    rec.state_reason = Some("why".into());
    rec.token.recent = vec![ReplacedToken {
        hash: "h0".into(),
        replaced_at: ts(6),
    }];
    rec.token.hash = Some("h1".into());
    rec.token.counter = 3;
    rec.last_seen_at = Some(ts(6));
    s.apply(insert(rec.clone())).await.unwrap();
    assert_eq!(s.get_client(&fp('c')).await.unwrap().unwrap(), rec);
    assert_eq!(
        s.apply(insert(rec.clone())).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    let stray = client_record(fp('d'), "nowhere", ts(7));
    assert_eq!(
        s.apply(insert(stray)).await.unwrap_err(),
        StoreError::NotFound
    );
    assert!(s.get_client(&fp('d')).await.unwrap().is_none());

    // Listing: by organisation, registration time, then fingerprint; filtered.
    s.apply(create_org("beta")).await.unwrap();
    s.apply(insert(client_record(fp('e'), "beta", ts(0))))
        .await
        .unwrap();
    let all: Vec<_> = s
        .list_clients(None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.fingerprint)
        .collect();
    assert_eq!(all, [fp('a'), fp('b'), fp('c'), fp('e')]);
    let active_acme: Vec<_> = s
        .list_clients(Some(&org()), Some(ClientState::Active))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.fingerprint)
        .collect();
    assert_eq!(active_acme, [fp('a'), fp('b')]);
    assert_eq!(
        s.list_clients(None, Some(ClientState::Pending))
            .await
            .unwrap()
            .len(),
        1
    );
}

fn token(hash: &str, org: &str, expires: i64) -> Mutation {
    Mutation::InsertRegistrationToken(RegistrationTokenRecord {
        hash: hash.into(),
        org: OrgName::parse(org).unwrap(),
        created_by: fp('a'),
        created_at: ts(10),
        expires_at: ts(expires),
    })
}

fn register(f: char, at: i64, token: &str) -> Mutation {
    Mutation::InsertClient {
        client: client_record(fp(f), "acme", ts(at)),
        consume_token: Some(token.into()),
    }
}

pub async fn registration_tokens_register_exactly_one_client(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    s.apply(create_org("beta")).await.unwrap();
    s.apply(token("t1", "acme", 100)).await.unwrap();
    s.apply(token("t-beta", "beta", 100)).await.unwrap();
    assert_eq!(
        s.apply(token("t1", "acme", 100)).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    assert_eq!(
        s.apply(token("t2", "nowhere", 100)).await.unwrap_err(),
        StoreError::NotFound
    );
    // Unknown, foreign and expired tokens register nobody.
    for (t, at) in [("unknown", 20), ("t-beta", 20), ("t1", 100), ("t1", 150)] {
        assert_eq!(
            s.apply(register('c', at, t)).await.unwrap_err(),
            StoreError::NotFound,
            "{t} at {at}"
        );
    }
    assert!(s.get_client(&fp('c')).await.unwrap().is_none());
    // A registration that fails for another reason leaves the token unused.
    assert_eq!(
        s.apply(register('a', 20, "t1")).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    s.apply(register('c', 20, "t1")).await.unwrap();
    assert!(s.get_client(&fp('c')).await.unwrap().is_some());
    assert_eq!(
        s.apply(register('d', 21, "t1")).await.unwrap_err(),
        StoreError::NotFound,
        "a token registers one client"
    );
    assert!(s.get_client(&fp('d')).await.unwrap().is_none());
}

pub async fn client_state_role_clone_marks_and_resets(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    for m in [
        Mutation::SetClientState {
            fingerprint: fp('f'),
            state: ClientState::Disabled,
            at: ts(9),
        },
        Mutation::SetClientRole {
            fingerprint: fp('f'),
            role: ClientRole::Admin,
            at: ts(9),
        },
        Mutation::MarkSuspectedClone {
            fingerprint: fp('f'),
            reason: "r".into(),
            at: ts(9),
        },
        Mutation::ResetToken {
            fingerprint: fp('f'),
            at: ts(9),
        },
    ] {
        assert_eq!(s.apply(m).await.unwrap_err(), StoreError::NotFound);
    }
    s.apply(Mutation::SetClientRole {
        fingerprint: fp('a'),
        role: ClientRole::Admin,
        at: ts(9),
    })
    .await
    .unwrap();
    let a = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!((a.role, a.updated_at), (ClientRole::Admin, ts(9)));

    // A clone mark, then a reset: active again, reason gone, counter kept, token cleared.
    s.apply(Mutation::RotateToken {
        fingerprint: fp('a'),
        expected_counter: 0,
        token: TokenState {
            counter: 1,
            hash: Some("h1".into()),
            recent: vec![ReplacedToken {
                hash: "h0".into(),
                replaced_at: ts(9),
            }],
            rotated_at: ts(9),
            confirmed: true,
            derivation: Some(TokenDerivation {
                kek_version: 1,
                salt: vec![7; 16],
            }),
        },
        at: ts(9),
    })
    .await
    .unwrap();
    s.apply(Mutation::MarkSuspectedClone {
        fingerprint: fp('a'),
        reason: "diverged".into(),
        at: ts(10),
    })
    .await
    .unwrap();
    let a = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(a.state, ClientState::SuspectedClone);
    assert_eq!(a.state_reason.as_deref(), Some("diverged"));
    s.apply(Mutation::ResetToken {
        fingerprint: fp('a'),
        at: ts(11),
    })
    .await
    .unwrap();
    let a = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(a.state, ClientState::Active);
    assert_eq!(a.state_reason, None);
    assert_eq!(a.token.counter, 1);
    assert_eq!(a.token.hash, None);
    assert!(a.token.recent.is_empty());
    assert!(!a.token.confirmed);
    assert_eq!(a.token.derivation, None);
    assert_eq!(a.updated_at, ts(11));

    // A reset keeps any other state, and its reason.
    s.apply(Mutation::DisableUnactivated {
        registered_before: ts(2),
        at: ts(12),
    })
    .await
    .unwrap();
    let b_ = s.get_client(&fp('b')).await.unwrap().unwrap();
    assert_eq!(b_.state, ClientState::Disabled);
    s.apply(Mutation::ResetToken {
        fingerprint: fp('b'),
        at: ts(13),
    })
    .await
    .unwrap();
    let b2 = s.get_client(&fp('b')).await.unwrap().unwrap();
    assert_eq!(b2.state, ClientState::Disabled);
    assert_eq!(b2.state_reason, b_.state_reason);
    // Setting a state keeps the reason too.
    s.apply(Mutation::SetClientState {
        fingerprint: fp('b'),
        state: ClientState::Active,
        at: ts(14),
    })
    .await
    .unwrap();
    let b3 = s.get_client(&fp('b')).await.unwrap().unwrap();
    assert_eq!((b3.state, b3.updated_at), (ClientState::Active, ts(14)));
    assert_eq!(b3.state_reason, b_.state_reason);
}

fn rotation(f: char, expected: u64, hash: &str, at: i64) -> Mutation {
    Mutation::RotateToken {
        fingerprint: fp(f),
        expected_counter: expected,
        token: TokenState {
            counter: expected + 1,
            hash: Some(hash.into()),
            recent: vec![],
            rotated_at: ts(at),
            confirmed: false,
            derivation: None,
        },
        at: ts(at),
    }
}

pub async fn token_rotation_is_compare_and_set(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    s.apply(rotation('a', 0, "h1", 20)).await.unwrap();
    let a = s.get_client(&fp('a')).await.unwrap().unwrap();
    assert_eq!(a.token.counter, 1);
    assert_eq!(a.token.hash.as_deref(), Some("h1"));
    assert_eq!(a.token.rotated_at, ts(20));
    assert_eq!(a.last_seen_at, Some(ts(20)));
    assert_eq!(
        s.apply(rotation('a', 0, "h1b", 21)).await.unwrap_err(),
        StoreError::Conflict,
        "the counter moved"
    );
    assert_eq!(
        s.apply(rotation('f', 0, "h", 21)).await.unwrap_err(),
        StoreError::NotFound
    );
    s.apply(Mutation::SetClientState {
        fingerprint: fp('b'),
        state: ClientState::Disabled,
        at: ts(21),
    })
    .await
    .unwrap();
    assert_eq!(
        s.apply(rotation('b', 0, "h", 22)).await.unwrap_err(),
        StoreError::Conflict,
        "only active clients rotate"
    );
    assert_eq!(
        s.get_client(&fp('b')).await.unwrap().unwrap().token.counter,
        0
    );
    // A suspected clone gets no rotation until an administrator resets its token; then the
    // counter it kept goes on.
    s.apply(Mutation::MarkSuspectedClone {
        fingerprint: fp('a'),
        reason: "token reuse".into(),
        at: ts(23),
    })
    .await
    .unwrap();
    assert_eq!(
        s.apply(rotation('a', 1, "h2", 24)).await.unwrap_err(),
        StoreError::Conflict,
        "a suspected clone does not rotate"
    );
    s.apply(Mutation::ResetToken {
        fingerprint: fp('a'),
        at: ts(25),
    })
    .await
    .unwrap();
    s.apply(rotation('a', 1, "h2", 26)).await.unwrap();
    // A reset does not revive a disabled client, which still does not rotate.
    s.apply(Mutation::ResetToken {
        fingerprint: fp('b'),
        at: ts(27),
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_client(&fp('b')).await.unwrap().unwrap().state,
        ClientState::Disabled
    );
    assert_eq!(
        s.apply(rotation('b', 0, "h", 28)).await.unwrap_err(),
        StoreError::Conflict
    );
}

/// The token state is stored whole: whether the current token was presented and how it was
/// derived, at registration and with every rotation; a stale confirmation changes nothing; a
/// reset clears both.
pub async fn token_confirmation_and_derivation_are_stored_whole(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    let mut rec = client_record(fp('e'), "acme", ts(1));
    rec.token.hash = Some("h0".into());
    rec.token.derivation = Some(TokenDerivation {
        kek_version: 3,
        salt: vec![0, 1, 255],
    });
    s.apply(insert(rec.clone())).await.unwrap();
    assert_eq!(
        s.get_client(&fp('e')).await.unwrap().unwrap().token,
        rec.token
    );

    // Rotated to a derived token, then the same token confirmed (same counter).
    let derived = TokenState {
        counter: 1,
        hash: Some("h1".into()),
        recent: vec![ReplacedToken {
            hash: "h0".into(),
            replaced_at: ts(2),
        }],
        rotated_at: ts(2),
        confirmed: false,
        derivation: Some(TokenDerivation {
            kek_version: 7,
            salt: vec![9; 16],
        }),
    };
    let rotate = |expected: u64, token: TokenState, at: i64| Mutation::RotateToken {
        fingerprint: fp('e'),
        expected_counter: expected,
        token,
        at: ts(at),
    };
    s.apply(rotate(0, derived.clone(), 2)).await.unwrap();
    assert_eq!(
        s.get_client(&fp('e')).await.unwrap().unwrap().token,
        derived
    );
    let confirmed = TokenState {
        confirmed: true,
        ..derived.clone()
    };
    s.apply(rotate(1, confirmed.clone(), 3)).await.unwrap();
    let x = s.get_client(&fp('e')).await.unwrap().unwrap();
    assert_eq!(x.token, confirmed);
    assert_eq!(x.last_seen_at, Some(ts(3)));
    // A confirmation decided on a stale record (the counter moved) changes nothing.
    assert_eq!(
        s.apply(rotate(0, confirmed.clone(), 4)).await.unwrap_err(),
        StoreError::Conflict
    );
    // A random token (nothing to derive it again from) replaces a derived one.
    let random = TokenState {
        counter: 2,
        hash: Some("h2".into()),
        recent: vec![],
        rotated_at: ts(5),
        confirmed: false,
        derivation: None,
    };
    s.apply(rotate(1, random.clone(), 5)).await.unwrap();
    assert_eq!(s.get_client(&fp('e')).await.unwrap().unwrap().token, random);
    // A reset clears the confirmation and the derivation with the hash.
    s.apply(rotate(
        2,
        TokenState {
            counter: 3,
            ..confirmed
        },
        6,
    ))
    .await
    .unwrap();
    s.apply(Mutation::ResetToken {
        fingerprint: fp('e'),
        at: ts(7),
    })
    .await
    .unwrap();
    let x = s.get_client(&fp('e')).await.unwrap().unwrap();
    assert_eq!(x.token.counter, 3);
    assert_eq!(x.token.hash, None);
    assert!(!x.token.confirmed);
    assert_eq!(x.token.derivation, None);
}

/// Many rotations from one counter at once, through two handles on one database (two nodes):
/// exactly one applies, every other is `Conflict`.
pub async fn concurrent_rotations_from_two_handles_have_one_winner(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let handles = [c.store.clone(), c.open_again().await];
    const N: usize = 32;
    let mut tasks = Vec::new();
    for i in 0..N {
        let s = handles[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            s.apply(rotation('a', 0, &format!("h{i}"), 30)).await
        }));
    }
    let results = join_all(tasks).await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || r == &Err(StoreError::Conflict)),
        "{results:?}"
    );
    for s in &handles {
        let a = s.get_client(&fp('a')).await.unwrap().unwrap();
        assert_eq!(a.token.counter, 1);
        assert_eq!(a.token.hash, Some(format!("h{}", winners[0])));
    }
}

pub async fn disable_unactivated_touches_only_unused_clients(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let s = &c.store;
    // a: seen (rotated once); b: never seen; c: admin, never seen; d: registered late;
    // 9: pending, never seen (registered after b, sorts before it); 0: already disabled.
    s.apply(rotation('a', 0, "h", 3)).await.unwrap();
    let mut admin = client_record(fp('c'), "acme", ts(1));
    admin.role = ClientRole::Admin;
    s.apply(insert(admin)).await.unwrap();
    s.apply(insert(client_record(fp('d'), "acme", ts(100))))
        .await
        .unwrap();
    let mut pending = client_record(fp('9'), "acme", ts(1));
    pending.state = ClientState::Pending;
    s.apply(insert(pending)).await.unwrap();
    let mut disabled = client_record(fp('0'), "acme", ts(1));
    disabled.state = ClientState::Disabled;
    s.apply(insert(disabled)).await.unwrap();
    // Seen at registration already (a last-seen time recorded with the record).
    let mut seen = client_record(fp('1'), "acme", ts(1));
    seen.last_seen_at = Some(ts(2));
    s.apply(insert(seen)).await.unwrap();
    let r = s
        .apply(Mutation::DisableUnactivated {
            registered_before: ts(50),
            at: ts(60),
        })
        .await
        .unwrap();
    let Applied::Clients(touched) = r else {
        panic!("{r:?}")
    };
    assert_eq!(touched, [fp('9'), fp('b')], "by fingerprint");
    for f in ['9', 'b'] {
        let rec = s.get_client(&fp(f)).await.unwrap().unwrap();
        assert_eq!(rec.state, ClientState::Disabled);
        assert_eq!(
            rec.state_reason.as_deref(),
            Some("never used its registration")
        );
        assert_eq!(rec.updated_at, ts(60));
    }
    for f in ['a', 'c', 'd', '1'] {
        assert_ne!(
            s.get_client(&fp(f)).await.unwrap().unwrap().state,
            ClientState::Disabled
        );
    }
    assert_eq!(
        s.apply(Mutation::DisableUnactivated {
            registered_before: ts(50),
            at: ts(61),
        })
        .await
        .unwrap(),
        Applied::Clients(vec![]),
        "nothing left to disable is not an error"
    );
}
