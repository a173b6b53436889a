//! Who may create groups and hand out their keys: a client claims a name only for itself, a claim
//! is visible and reclaimable, and two members cannot hand the same newcomer different keys.
//! Also: organisation operations refuse a non-administrator in the service itself.

use crate::assert_code;
use keysafe_client::vault::{admin_create_group, admin_remove_member};
use keysafe_core::{Caller, CoreError};
use keysafe_proto::api::{
    ClientRole, GroupAdmitRequest, OrgCreateRequest, OrgSetAuthRequest, WrappedEpoch,
};
use keysafe_proto::{ErrorCode, GroupName, OrgName};
use keysafe_testkit::TestServer;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_client_cannot_put_others_in_a_group() {
    let ts = TestServer::start().await;
    let a = ts.new_client("acme").await;
    let b = ts.new_client("acme").await;
    let g = GroupName::parse("ops").unwrap();
    assert_code(
        a.vault()
            .create_group(&g, std::slice::from_ref(&b.fingerprint))
            .await,
        ErrorCode::Forbidden,
    );
    // Nothing was created: the name is still free, b is in no group.
    assert!(b.client.groups().await.unwrap().groups.is_empty());
    assert!(ts.admin.admin_groups(None).await.unwrap().groups.is_empty());
    // Alone, the same client may.
    a.vault().create_group(&g, &[]).await.unwrap();
    // An administrator creates groups of any members.
    admin_create_group(
        &ts.admin,
        &OrgName::parse("acme").unwrap(),
        &GroupName::parse("shared").unwrap(),
        &[a.fingerprint.clone(), b.fingerprint.clone()],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_squatted_group_name_is_visible_and_reclaimable() {
    let ts = TestServer::start().await;
    let squatter = ts.new_client("acme").await;
    let gateway = ts.new_client("acme").await;
    let acme = OrgName::parse("acme").unwrap();
    let kms = GroupName::parse("kms").unwrap();
    squatter.vault().create_group(&kms, &[]).await.unwrap();
    // The administrator's group of the same name is refused loudly, never merged.
    assert_code(
        admin_create_group(
            &ts.admin,
            &acme,
            &kms,
            std::slice::from_ref(&gateway.fingerprint),
        )
        .await,
        ErrorCode::AlreadyExists,
    );
    // The claim is visible to administrators, with its only member.
    let list = ts.admin.admin_groups(Some(&acme)).await.unwrap();
    let g = list.groups.iter().find(|g| g.name == kms).unwrap();
    let members: Vec<_> = g.members.iter().map(|m| m.fingerprint.clone()).collect();
    assert_eq!(members, vec![squatter.fingerprint.clone()]);
    // The gateway is not in it and cannot use it.
    assert_code(gateway.client.group(&kms).await, ErrorCode::NotFound);
    assert_code(gateway.client.group_keys(&kms).await, ErrorCode::NotFound);
    // The administrator reclaims it: the rightful member in, the squatter out, a new epoch the
    // squatter never holds.
    ts.admin
        .admin_add_member(&acme, &kms, &gateway.fingerprint)
        .await
        .unwrap();
    let g = admin_remove_member(&ts.admin, &acme, &kms, &squatter.fingerprint)
        .await
        .unwrap();
    assert_eq!(g.epoch, 2);
    let mine = gateway.client.group(&kms).await.unwrap();
    assert!(
        mine.members
            .iter()
            .any(|m| m.fingerprint == gateway.fingerprint && m.has_current_key)
    );
    assert_code(squatter.client.group(&kms).await, ErrorCode::NotFound);
}

#[tokio::test]
async fn a_conflicting_admission_is_an_error_not_first_wins() {
    let ts = TestServer::start().await;
    let a = ts.new_client("acme").await;
    let c = ts.new_client("acme").await;
    let newcomer = ts.new_client("acme").await;
    let late = ts.new_client("acme").await;
    let acme = OrgName::parse("acme").unwrap();
    let g = GroupName::parse("ops").unwrap();
    admin_create_group(
        &ts.admin,
        &acme,
        &g,
        &[a.fingerprint.clone(), c.fingerprint.clone()],
    )
    .await
    .unwrap();
    ts.admin
        .admin_add_member(&acme, &g, &newcomer.fingerprint)
        .await
        .unwrap();
    // a admits the newcomer properly.
    a.vault().admit(&g, &newcomer.fingerprint).await.unwrap();
    let held = newcomer.client.group_keys(&g).await.unwrap().keys;
    assert_eq!(held.len(), 1);
    // c hands it a different key for the same epoch: refused, and what it holds is unchanged.
    let other = GroupAdmitRequest {
        member: newcomer.fingerprint.clone(),
        keys: vec![WrappedEpoch {
            epoch: 1,
            wrapped: b64(b"a different wrapped identity"),
        }],
    };
    assert_code(c.client.admit(&g, &other).await, ErrorCode::VersionConflict);
    let now: Vec<_> = newcomer
        .client
        .group_keys(&g)
        .await
        .unwrap()
        .keys
        .into_iter()
        .map(|k| (k.epoch, k.wrapped))
        .collect();
    assert_eq!(now, vec![(1, held[0].wrapped.clone())]);
    // Repeating the same handover is harmless (a retry).
    let same = GroupAdmitRequest {
        member: newcomer.fingerprint.clone(),
        keys: vec![WrappedEpoch {
            epoch: 1,
            wrapped: held[0].wrapped.clone(),
        }],
    };
    a.client.admit(&g, &same).await.unwrap();
    // Two members admitting at the same moment with different keys: one wins, the other is
    // told, never silently dropped.
    ts.admin
        .admin_add_member(&acme, &g, &late.fingerprint)
        .await
        .unwrap();
    let offer = |blob: &[u8]| GroupAdmitRequest {
        member: late.fingerprint.clone(),
        keys: vec![WrappedEpoch {
            epoch: 1,
            wrapped: b64(blob),
        }],
    };
    let (oa, oc) = (offer(b"wrapped by a"), offer(b"wrapped by c"));
    let (ra, rc) = tokio::join!(a.client.admit(&g, &oa), c.client.admit(&g, &oc));
    let conflicts = [&ra, &rc]
        .iter()
        .filter(|r| matches!(r, Err(e) if e.code() == Some(ErrorCode::VersionConflict)))
        .count();
    let oks = [&ra, &rc].iter().filter(|r| r.is_ok()).count();
    assert_eq!((oks, conflicts), (1, 1), "{ra:?} {rc:?}");
}

#[tokio::test]
async fn organisation_operations_refuse_a_non_administrator_in_the_service() {
    let ts = TestServer::start().await;
    let c = ts.new_client("acme").await;
    let service = ts.service();
    let client = Caller {
        fingerprint: c.fingerprint.clone(),
        org: OrgName::parse("acme").unwrap(),
        role: ClientRole::Client,
    };
    let forbidden = |r: Result<(), CoreError>| {
        assert!(matches!(r, Err(CoreError::Forbidden(_))), "{r:?}");
    };
    forbidden(
        service
            .create_org(
                &client,
                OrgCreateRequest {
                    name: OrgName::parse("evil").unwrap(),
                    contacts: vec![],
                },
            )
            .await
            .map(|_| ()),
    );
    forbidden(service.list_orgs(&client).await.map(|_| ()));
    forbidden(
        service
            .set_org_auth(
                &client,
                &OrgName::parse("acme").unwrap(),
                OrgSetAuthRequest::Approval,
            )
            .await
            .map(|_| ()),
    );
    // Nothing changed; an administrator still can.
    let admin = Caller {
        fingerprint: ts.summary.admin_fingerprint.clone(),
        org: OrgName::parse("keysafe-admins").unwrap(),
        role: ClientRole::Admin,
    };
    let orgs = service.list_orgs(&admin).await.unwrap();
    assert!(!orgs.iter().any(|o| o.name.as_str() == "evil"));
    assert_eq!(
        orgs.iter()
            .find(|o| o.name.as_str() == "acme")
            .unwrap()
            .auth_mode,
        keysafe_proto::api::AuthMode::Secret
    );
}
