//! The end of life over HTTP: deleting organisations, clients and groups (dry runs that change
//! nothing, `409 in_use` naming what still depends, administrators only), unused registration
//! tokens listed and revoked, the client listing page by page, and the `disable-unactivated`
//! preview.

use crate::assert_code;
use keysafe_client::{ClientError, Precondition};
use keysafe_proto::api::{Access, AclChange, ClientState};
use keysafe_proto::{DepositName, ErrorCode, GroupName, OrgName};
use keysafe_testkit::{TestServer, TestStorage};
use std::collections::BTreeSet;

fn name(s: &str) -> DepositName {
    DepositName::parse(s).unwrap()
}

fn no_progress(_: usize, _: usize) {}

/// The message of an API error (panics on anything else).
#[track_caller]
fn message<T: std::fmt::Debug>(r: Result<T, ClientError>, code: ErrorCode) -> String {
    match r {
        Err(ClientError::Api {
            code: c,
            status,
            message,
            ..
        }) => {
            assert_eq!(c, code);
            assert_eq!(status, code.http_status());
            message
        }
        other => panic!("expected {code}, got {other:?}"),
    }
}

async fn clients_of(ts: &TestServer, org: &OrgName) -> BTreeSet<String> {
    ts.admin
        .list_clients(Some(org), None)
        .await
        .unwrap()
        .clients
        .into_iter()
        .map(|c| c.fingerprint.to_string())
        .collect()
}

async fn deletions_refuse_what_depends_and_remove_the_rest(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let acme = OrgName::parse("acme").unwrap();
    let owner = ts.new_client("acme").await;
    let grantee = ts.new_client("acme").await;
    let vo = owner.vault();
    vo.put(None, &name("db/key"), b"secret", Precondition::None)
        .await
        .unwrap();
    vo.change_acl(
        None,
        &name("db/key"),
        AclChange::Grant {
            grantee: grantee.fingerprint.to_string(),
            access: Access::Read,
        },
        &no_progress,
    )
    .await
    .unwrap();
    let serial_before = owner.client.acl(None, &name("db/key")).await.unwrap();

    // The organisation still has clients: refused, dry run or not, and the message names them.
    let m = message(ts.admin.delete_org(&acme, true).await, ErrorCode::InUse);
    assert!(m.contains("2 clients") && m.contains("acme"), "{m}");
    message(ts.admin.delete_org(&acme, false).await, ErrorCode::InUse);
    // The owner owns a deposit.
    let m = message(
        ts.admin.delete_client(&owner.fingerprint, false).await,
        ErrorCode::InUse,
    );
    assert!(m.contains("owns 1 deposit (db/key)"), "{m}");
    owner.client.whoami().await.unwrap();

    // The grantee: a dry run says what would go and changes nothing.
    let plan = ts
        .admin
        .delete_client(&grantee.fingerprint, true)
        .await
        .unwrap();
    assert!(plan.dry_run);
    assert_eq!(plan.org, acme);
    assert_eq!(plan.grants, 1);
    assert_eq!(plan.grants_sample.len(), 1);
    assert!(plan.grants_sample[0].ends_with("db/key"), "{plan:?}");
    grantee.client.whoami().await.unwrap();
    assert!(
        clients_of(&ts, &acme)
            .await
            .contains(grantee.fingerprint.as_str())
    );
    // Then the deletion: the client is gone, cannot authenticate, and its grant went with it
    // (the ACL serial moved on, so no writer encrypts to it again).
    let done = ts
        .admin
        .delete_client(&grantee.fingerprint, false)
        .await
        .unwrap();
    assert!(!done.dry_run);
    assert_eq!(done.grants, 1);
    assert!(
        !clients_of(&ts, &acme)
            .await
            .contains(grantee.fingerprint.as_str())
    );
    assert_code(grantee.client.whoami().await, ErrorCode::UnknownClient);
    let acl = owner.client.acl(None, &name("db/key")).await.unwrap();
    assert!(acl.grants.is_empty(), "{acl:?}");
    assert!(acl.acl_serial > serial_before.acl_serial);
    assert_eq!(acl.recipients.len(), 1);
    // Again: not found.
    assert_code(
        ts.admin.delete_client(&grantee.fingerprint, false).await,
        ErrorCode::NotFound,
    );

    // A group: refused while a deposit is shared with it, and its only key holder cannot go.
    let g = GroupName::parse("kms").unwrap();
    keysafe_client::vault::admin_create_group(
        &ts.admin,
        &acme,
        &g,
        std::slice::from_ref(&owner.fingerprint),
    )
    .await
    .unwrap();
    vo.change_acl(
        None,
        &name("db/key"),
        AclChange::Grant {
            grantee: "group:kms".into(),
            access: Access::Read,
        },
        &no_progress,
    )
    .await
    .unwrap();
    let m = message(
        ts.admin.delete_group(&acme, &g, true).await,
        ErrorCode::InUse,
    );
    assert!(m.contains("grantee of 1 deposit"), "{m}");
    let m = message(ts.admin.delete_org(&acme, true).await, ErrorCode::InUse);
    assert!(m.contains("1 group (kms)"), "{m}");
    owner.client.delete(&name("db/key")).await.unwrap();
    // Soft-deleted still counts: the owner could undelete it.
    let m = message(
        ts.admin.delete_client(&owner.fingerprint, true).await,
        ErrorCode::InUse,
    );
    assert!(
        m.contains("owns 1 deposit") && m.contains("only member of group acme/kms"),
        "{m}"
    );
    owner.client.purge(&name("db/key")).await.unwrap();
    let m = message(
        ts.admin.delete_client(&owner.fingerprint, true).await,
        ErrorCode::InUse,
    );
    assert!(!m.contains("owns") && m.contains("acme/kms"), "{m}");
    // The group, with nothing shared with it any more.
    let plan = ts.admin.delete_group(&acme, &g, true).await.unwrap();
    assert!(plan.dry_run && plan.members == 1);
    ts.admin.admin_group(&acme, &g).await.unwrap();
    let done = ts.admin.delete_group(&acme, &g, false).await.unwrap();
    assert_eq!(done.members, 1);
    assert_code(ts.admin.admin_group(&acme, &g).await, ErrorCode::NotFound);
    assert_code(
        ts.admin.delete_group(&acme, &g, false).await,
        ErrorCode::NotFound,
    );
    // Now the owner, then the empty organisation with its unused token.
    ts.admin
        .delete_client(&owner.fingerprint, false)
        .await
        .unwrap();
    ts.admin.mint_registration_token(&acme, None).await.unwrap();
    let plan = ts.admin.delete_org(&acme, true).await.unwrap();
    assert_eq!((plan.dry_run, plan.unused_tokens), (true, 1));
    assert!(
        ts.admin
            .list_orgs()
            .await
            .unwrap()
            .orgs
            .iter()
            .any(|o| o.name == acme)
    );
    let done = ts.admin.delete_org(&acme, false).await.unwrap();
    assert_eq!((done.dry_run, done.unused_tokens), (false, 1));
    assert!(
        !ts.admin
            .list_orgs()
            .await
            .unwrap()
            .orgs
            .iter()
            .any(|o| o.name == acme)
    );
    assert_code(ts.admin.delete_org(&acme, false).await, ErrorCode::NotFound);
    // The name can be used again, from scratch.
    ts.new_client("acme").await.client.whoami().await.unwrap();
    // Every deletion is in the audit trail.
    let audit = ts
        .admin
        .audit_entries(1, None, 10_000)
        .await
        .unwrap()
        .entries;
    let deletes = audit
        .iter()
        .filter(|e| e.event.operation.starts_with("DELETE /v1/admin/") && e.event.outcome == "ok")
        .count();
    assert!(deletes >= 4, "{deletes}");
}

async fn only_administrators_delete_and_never_the_last_or_themselves(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let acme = OrgName::parse("acme").unwrap();
    let a = ts.new_client("acme").await;
    let b = ts.new_client("acme").await;
    let g = GroupName::parse("ops").unwrap();
    keysafe_client::vault::admin_create_group(
        &ts.admin,
        &acme,
        &g,
        &[a.fingerprint.clone(), b.fingerprint.clone()],
    )
    .await
    .unwrap();
    // An ordinary client can delete nothing, not even with a dry run.
    assert_code(
        a.client.delete_client(&b.fingerprint, true).await,
        ErrorCode::Forbidden,
    );
    assert_code(
        a.client.delete_client(&a.fingerprint, false).await,
        ErrorCode::Forbidden,
    );
    assert_code(
        a.client.delete_group(&acme, &g, false).await,
        ErrorCode::Forbidden,
    );
    assert_code(
        a.client.delete_org(&acme, false).await,
        ErrorCode::Forbidden,
    );
    assert_code(
        a.client.registration_tokens(&acme).await,
        ErrorCode::Forbidden,
    );
    assert_code(
        a.client.revoke_registration_tokens(&acme, None).await,
        ErrorCode::Forbidden,
    );
    assert_code(
        a.client.list_clients_page(None, None, Some(1), None).await,
        ErrorCode::Forbidden,
    );
    assert_code(a.client.preview_unactivated(0).await, ErrorCode::Forbidden);
    assert!(
        clients_of(&ts, &acme)
            .await
            .contains(b.fingerprint.as_str())
    );
    ts.admin.admin_group(&acme, &g).await.unwrap();

    // The administrator cannot delete itself, nor the administrators' organisation.
    assert_code(
        ts.admin
            .delete_client(&ts.summary.admin_fingerprint, true)
            .await,
        ErrorCode::Forbidden,
    );
    assert_code(
        ts.admin
            .delete_org(&OrgName::parse("keysafe-admins").unwrap(), true)
            .await,
        ErrorCode::Forbidden,
    );
    // Another administrator can delete an administrator (one stays active: the caller). The
    // group keeps a key holder: b.
    ts.admin
        .client_action(&a.fingerprint, "promote")
        .await
        .unwrap();
    let plan = ts.admin.delete_client(&a.fingerprint, true).await.unwrap();
    assert_eq!(plan.memberships, vec!["acme/ops".to_owned()]);
    ts.admin.delete_client(&a.fingerprint, false).await.unwrap();
    let group = ts.admin.admin_group(&acme, &g).await.unwrap();
    assert_eq!(group.members.len(), 1);
    // b is now the group's only key holder.
    let m = message(
        ts.admin.delete_client(&b.fingerprint, true).await,
        ErrorCode::InUse,
    );
    assert!(m.contains("only member of group acme/ops"), "{m}");
    // Unknown names are 404s.
    let raw = ts.admin.clone();
    assert_code(
        raw.delete_org(&OrgName::parse("nowhere").unwrap(), false)
            .await,
        ErrorCode::NotFound,
    );
    assert_code(
        raw.delete_group(&acme, &GroupName::parse("none").unwrap(), true)
            .await,
        ErrorCode::NotFound,
    );
}

async fn unused_registration_tokens_are_listed_and_revoked(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    ts.create_org("acme").await;
    ts.create_org("globex").await;
    let acme = OrgName::parse("acme").unwrap();
    let globex = OrgName::parse("globex").unwrap();
    let t1 = ts
        .admin
        .mint_registration_token(&acme, Some(3600))
        .await
        .unwrap();
    let t2 = ts
        .admin
        .mint_registration_token(&acme, Some(3600))
        .await
        .unwrap();
    let used = ts
        .admin
        .mint_registration_token(&acme, Some(3600))
        .await
        .unwrap();
    let other = ts
        .admin
        .mint_registration_token(&globex, None)
        .await
        .unwrap();
    ts.register("acme", Some(used.token.clone())).await.unwrap();

    let list = ts.admin.registration_tokens(&acme).await.unwrap();
    assert_eq!(list.org, acme);
    assert_eq!(list.tokens.len(), 2, "{list:?}");
    let listed = serde_json::to_string(&list).unwrap();
    for t in [&t1, &t2, &used] {
        // Never the token, nor its secret part.
        let secret = t.token.expose();
        assert!(!listed.contains(secret), "{listed}");
        assert!(!listed.contains(&secret[4..]), "{listed}");
    }
    for t in &list.tokens {
        assert_eq!(t.id.len(), 12);
        assert!(!t.expired);
        assert_eq!(t.created_by, ts.summary.admin_fingerprint);
    }
    assert_eq!(
        ts.admin
            .registration_tokens(&globex)
            .await
            .unwrap()
            .tokens
            .len(),
        1
    );

    // Bad ids: too short, not hex, unknown, or of another organisation.
    let id = list.tokens[0].id.clone();
    for bad in ["abc", "zzzzzzzz", "ABCDEF01"] {
        assert_code(
            ts.admin.revoke_registration_tokens(&acme, Some(bad)).await,
            ErrorCode::BadRequest,
        );
    }
    let globex_id = ts.admin.registration_tokens(&globex).await.unwrap().tokens[0]
        .id
        .clone();
    assert_code(
        ts.admin
            .revoke_registration_tokens(&acme, Some(&globex_id))
            .await,
        ErrorCode::NotFound,
    );
    assert_code(
        ts.admin
            .revoke_registration_tokens(&OrgName::parse("nowhere").unwrap(), None)
            .await,
        ErrorCode::NotFound,
    );
    assert_eq!(
        ts.admin
            .registration_tokens(&acme)
            .await
            .unwrap()
            .tokens
            .len(),
        2
    );

    // One, by a prefix of its id: it registers nobody any more; the other still works.
    let r = ts
        .admin
        .revoke_registration_tokens(&acme, Some(&id[..6]))
        .await
        .unwrap();
    assert_eq!(r.revoked, 1);
    let left = ts.admin.registration_tokens(&acme).await.unwrap().tokens;
    assert_eq!(left.len(), 1);
    assert_ne!(left[0].id, id);
    // Revoked once: not found the second time.
    assert_code(
        ts.admin.revoke_registration_tokens(&acme, Some(&id)).await,
        ErrorCode::NotFound,
    );
    // All: the rest of acme's, none of globex's. The revoked token registers nobody, the
    // revoked-with-all one neither.
    let r = ts
        .admin
        .revoke_registration_tokens(&acme, None)
        .await
        .unwrap();
    assert_eq!(r.revoked, 1);
    assert!(
        ts.admin
            .registration_tokens(&acme)
            .await
            .unwrap()
            .tokens
            .is_empty()
    );
    for t in [&t1, &t2] {
        assert_code(
            ts.register("acme", Some(t.token.clone()))
                .await
                .map(|c| c.fingerprint),
            ErrorCode::InvalidAuth,
        );
    }
    assert_eq!(
        ts.admin
            .revoke_registration_tokens(&acme, None)
            .await
            .unwrap()
            .revoked,
        0
    );
    ts.register("globex", Some(other.token.clone()))
        .await
        .unwrap();
}

async fn the_client_listing_comes_in_pages(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    for org in ["acme", "acme", "acme", "beta", "beta"] {
        ts.new_client(org).await;
    }
    let all = ts.admin.list_clients(None, None).await.unwrap();
    assert!(all.next_after.is_none());
    // Five clients and the administrator.
    assert_eq!(all.clients.len(), 6);
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let p = ts
            .admin
            .list_clients_page(None, None, Some(2), after.as_deref())
            .await
            .unwrap();
        assert!(p.clients.len() <= 2);
        pages += 1;
        paged.extend(p.clients.into_iter().map(|c| c.fingerprint));
        match p.next_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let whole: Vec<_> = all.clients.iter().map(|c| c.fingerprint.clone()).collect();
    assert_eq!(paged, whole);
    // Filters hold across pages.
    let beta = OrgName::parse("beta").unwrap();
    let p = ts
        .admin
        .list_clients_page(Some(&beta), Some(ClientState::Active), Some(1), None)
        .await
        .unwrap();
    assert_eq!(p.clients.len(), 1);
    let p2 = ts
        .admin
        .list_clients_page(
            Some(&beta),
            Some(ClientState::Active),
            Some(1),
            p.next_after.as_deref(),
        )
        .await
        .unwrap();
    assert_eq!(p2.clients.len(), 1);
    assert!(p2.next_after.is_none());
    assert!(p2.clients.iter().all(|c| c.org == beta));
    // Bad limits and cursors are refused.
    for limit in [0, 1001] {
        assert_code(
            ts.admin
                .list_clients_page(None, None, Some(limit), None)
                .await,
            ErrorCode::BadRequest,
        );
    }
    for bad in ["nonsense", "acme/x/y", "acme/1/not-a-fingerprint"] {
        assert_code(
            ts.admin
                .list_clients_page(None, None, Some(2), Some(bad))
                .await,
            ErrorCode::BadRequest,
        );
    }
}

async fn disable_unactivated_dry_run_disables_nothing(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let used = ts.new_client("acme").await;
    let unused = ts.new_client("acme").await;
    used.client.whoami().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(
        ts.admin
            .preview_unactivated(3600)
            .await
            .unwrap()
            .clients
            .is_empty()
    );
    let preview = ts.admin.preview_unactivated(0).await.unwrap();
    let fps: Vec<_> = preview
        .clients
        .iter()
        .map(|c| c.fingerprint.clone())
        .collect();
    assert_eq!(fps, vec![unused.fingerprint.clone()]);
    // Nothing changed: the preview's client is still active, and the real sweep agrees.
    let listed = ts.admin.list_clients(None, None).await.unwrap();
    let c = listed
        .clients
        .iter()
        .find(|c| c.fingerprint == unused.fingerprint)
        .unwrap();
    assert_eq!(c.state, ClientState::Active);
    let disabled = ts.admin.disable_unactivated(0).await.unwrap();
    let swept: Vec<_> = disabled
        .clients
        .iter()
        .map(|c| c.fingerprint.clone())
        .collect();
    assert_eq!(swept, fps);
    assert_code(unused.client.whoami().await, ErrorCode::ClientDisabled);
}

// Every test above runs on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(
    deletions_refuse_what_depends_and_remove_the_rest,
    only_administrators_delete_and_never_the_last_or_themselves,
    unused_registration_tokens_are_listed_and_revoked,
    the_client_listing_comes_in_pages,
    disable_unactivated_dry_run_disables_nothing,
);
