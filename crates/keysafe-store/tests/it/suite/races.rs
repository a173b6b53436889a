//! Compare-and-set changes raced from two handles on one database (two nodes, or two
//! processes): of several changes from the same state, exactly one applies and every other
//! gets the contract's refusal. Token rotations race in `identities`.

use super::*;
use keysafe_core::store::{GrantRecord, RegistrationTokenRecord, WrappedKeyRecord};
use keysafe_proto::GroupName;
use keysafe_proto::api::Access;

/// Applies `n` changes at once, alternating between the handles; answers their results in
/// order.
async fn race(
    handles: &[Arc<dyn Store>],
    n: usize,
    make: impl Fn(usize) -> Mutation,
) -> Vec<Result<Applied, StoreError>> {
    let tasks = (0..n)
        .map(|i| {
            let s = handles[i % handles.len()].clone();
            let m = make(i);
            tokio::spawn(async move { s.apply(m).await })
        })
        .collect();
    join_all(tasks).await
}

/// The index of the one success; every other result must be `loser`.
fn one_winner(results: &[Result<Applied, StoreError>], loser: &StoreError) -> usize {
    let winners: Vec<usize> = (0..results.len()).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one wins: {results:?}");
    for r in results.iter().filter(|r| r.is_err()) {
        assert_eq!(r.as_ref().unwrap_err(), loser);
    }
    winners[0]
}

pub async fn concurrent_puts_with_the_same_expectation_have_one_winner(b: &dyn TestBackend) {
    let c = Ctx::new(b).await;
    let handles = [c.store.clone(), c.open_again().await];
    let k = key('a', "race");
    for (expected, n) in [(None, 1u64), (Some(1), 2)] {
        let results = race(&handles, 8, |i| Mutation::PutVersion {
            org: org(),
            key: k.clone(),
            expected_current: expected.map(ver),
            expected_acl_serial: None,
            version: version(n, &[i as u8]),
        })
        .await;
        let won = one_winner(
            &results,
            &StoreError::VersionConflict {
                current: Some(ver(n)),
            },
        );
        let (d, v, _) = std::sync::Arc::unwrap_or_clone(
            handles[0].get_version(&k, None).await.unwrap().unwrap(),
        );
        assert_eq!(d.current_version, ver(n));
        assert_eq!(v.ciphertext, [won as u8]);
    }
    assert_eq!(handles[1].list_versions(&k).await.unwrap().len(), 2);
}

/// One-time registration tokens, ACL swaps and group epochs.
pub async fn concurrent_registrations_acl_swaps_and_member_removals_have_one_winner(
    b: &dyn TestBackend,
) {
    let c = Ctx::new(b).await;
    let handles = [c.store.clone(), c.open_again().await];
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
        client: client_record(fp(candidates[i]), "acme", ts(10)),
        consume_token: Some("t-race".into()),
    })
    .await;
    let won = one_winner(&results, &StoreError::NotFound);
    for (i, f) in candidates.iter().enumerate() {
        assert_eq!(s.get_client(&fp(*f)).await.unwrap().is_some(), i == won);
    }

    let k = key('a', "acl-race");
    c.put(&k, None, 1, b"x").await.unwrap();
    let results = race(&handles, 8, |i| Mutation::SetAcl {
        key: k.clone(),
        expected_current: ver(1),
        expected_acl_serial: 0,
        grants: vec![GrantRecord {
            grantee: Principal::Client(fp(candidates[i])),
            access: Access::Read,
            granted_by: fp('a'),
            granted_at: ts(20),
            mac: None,
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
        keys: ['a', 'b']
            .into_iter()
            .map(|m| WrappedKeyRecord {
                epoch: 1,
                member: fp(m),
                wrapped: vec![m as u8],
            })
            .collect(),
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
