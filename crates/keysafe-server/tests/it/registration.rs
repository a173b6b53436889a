//! Organisations, registration and the client lifecycle.

use crate::assert_code;
use keysafe_client::Precondition;
use keysafe_proto::api::{AuthMode, AuthSecret, ClientState, ListQuery, OrgSetAuthRequest};
use keysafe_proto::{DepositName, ErrorCode, OrgName};
use keysafe_testkit::{TestServer, TestStorage};

fn org(s: &str) -> OrgName {
    OrgName::parse(s).unwrap()
}

async fn register_with_secret_is_active(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    let me = c.client.whoami().await.unwrap();
    assert_eq!(me.state, ClientState::Active);
    assert_eq!(me.org, org("acme"));
    assert_eq!(me.fingerprint, c.fingerprint);
    c.client
        .put(
            &DepositName::parse("k").unwrap(),
            b"v".to_vec(),
            Precondition::None,
        )
        .await
        .unwrap();
}

async fn wrong_secret_or_unknown_org_registers_nothing(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let _right = ts.create_org("acme").await;
    let before = ts
        .admin
        .list_clients(None, None)
        .await
        .unwrap()
        .clients
        .len();
    assert_code(
        ts.register("acme", Some(AuthSecret::new("definitely-not-the-secret")))
            .await
            .map(|_| ()),
        ErrorCode::InvalidAuth,
    );
    assert_code(
        ts.register("acme", None).await.map(|_| ()),
        ErrorCode::InvalidAuth,
    );
    assert_code(
        ts.register("no-such-org", Some(AuthSecret::new("whatever-secret-1234")))
            .await
            .map(|_| ()),
        ErrorCode::InvalidAuth,
    );
    let after = ts
        .admin
        .list_clients(None, None)
        .await
        .unwrap()
        .clients
        .len();
    assert_eq!(
        before, after,
        "a refused registration must not create a client"
    );
}

async fn approval_mode_pending_then_approved_then_disabled_then_enabled(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    ts.create_org("acme").await;
    let r = ts
        .admin
        .set_org_auth(&org("acme"), &OrgSetAuthRequest::Approval)
        .await
        .unwrap();
    assert_eq!(r.auth_mode, AuthMode::Approval);
    assert!(r.auth_secret.is_none());
    let c = ts.register("acme", None).await.unwrap();
    let name = DepositName::parse("k").unwrap();

    let pending = ts
        .admin
        .list_clients(Some(&org("acme")), Some(ClientState::Pending))
        .await
        .unwrap();
    assert_eq!(pending.clients.len(), 1);
    assert_eq!(pending.clients[0].fingerprint, c.fingerprint);
    assert_code(
        c.client.put(&name, b"v".to_vec(), Precondition::None).await,
        ErrorCode::ClientPending,
    );
    assert_code(c.client.get(&name, None).await, ErrorCode::ClientPending);
    // Enable is not approve.
    assert_code(
        ts.admin.client_action(&c.fingerprint, "enable").await,
        ErrorCode::InvalidState,
    );

    let approved = ts
        .admin
        .client_action(&c.fingerprint, "approve")
        .await
        .unwrap();
    assert_eq!(approved.state, ClientState::Active);
    c.client
        .put(&name, b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    assert_code(
        ts.admin.client_action(&c.fingerprint, "approve").await,
        ErrorCode::InvalidState,
    );

    ts.admin
        .client_action(&c.fingerprint, "disable")
        .await
        .unwrap();
    assert_code(c.client.get(&name, None).await, ErrorCode::ClientDisabled);
    assert_code(
        c.client.list(&ListQuery::default()).await,
        ErrorCode::ClientDisabled,
    );
    assert_code(c.client.whoami().await, ErrorCode::ClientDisabled);

    ts.admin
        .client_action(&c.fingerprint, "enable")
        .await
        .unwrap();
    assert_eq!(&c.client.get(&name, None).await.unwrap().payload[..], b"v");
}

async fn rotating_the_secret_invalidates_the_old_one(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let old = ts.create_org("acme").await;
    let r = ts
        .admin
        .set_org_auth(&org("acme"), &OrgSetAuthRequest::Random)
        .await
        .unwrap();
    let new = r.auth_secret.unwrap();
    assert_ne!(new.expose(), old.expose());
    assert_code(
        ts.register("acme", Some(old)).await.map(|_| ()),
        ErrorCode::InvalidAuth,
    );
    ts.register("acme", Some(new)).await.unwrap();

    let chosen = AuthSecret::new("a-chosen-secret-of-length");
    ts.admin
        .set_org_auth(
            &org("acme"),
            &OrgSetAuthRequest::Secret {
                secret: chosen.clone(),
            },
        )
        .await
        .unwrap();
    ts.register("acme", Some(chosen)).await.unwrap();
    assert_code(
        ts.admin
            .set_org_auth(
                &org("acme"),
                &OrgSetAuthRequest::Secret {
                    secret: AuthSecret::new("short"),
                },
            )
            .await,
        ErrorCode::BadRequest,
    );
}

async fn secrets_are_stored_only_as_argon2id_hashes(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let secret = ts.create_org("acme").await;
    let mut db = ts.raw_db().await;
    let hash = db
        .scalar("SELECT auth_hash FROM orgs WHERE name = 'acme'", &[])
        .await
        .unwrap();
    let hash = hash.as_text().unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(secret.expose()));
    let listed = ts.admin.list_orgs().await.unwrap();
    assert!(!format!("{listed:?}").contains(secret.expose()));
}

async fn duplicate_org_and_double_registration_conflict(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    assert_code(
        ts.admin
            .create_org(&keysafe_proto::api::OrgCreateRequest {
                name: org("acme"),
                contacts: vec![],
            })
            .await,
        ErrorCode::AlreadyExists,
    );
    let again = c
        .client
        .register(&keysafe_proto::api::RegisterRequest {
            org: org("acme"),
            auth_secret: Some(AuthSecret::new("anything-at-all-here")),
            name: None,
            recipient: None,
        })
        .await;
    assert_code(again, ErrorCode::AlreadyRegistered);
}

async fn admin_operations_need_an_admin(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    assert_code(c.client.list_orgs().await, ErrorCode::Forbidden);
    assert_code(
        c.client.list_clients(None, None).await,
        ErrorCode::Forbidden,
    );
    assert_code(
        c.client.client_action(&c.fingerprint, "disable").await,
        ErrorCode::Forbidden,
    );
    assert_code(
        c.client
            .set_org_auth(&org("acme"), &OrgSetAuthRequest::Approval)
            .await,
        ErrorCode::Forbidden,
    );
    // The admin cannot lock itself out.
    let me = ts.admin.whoami().await.unwrap();
    assert_code(
        ts.admin.client_action(&me.fingerprint, "disable").await,
        ErrorCode::Forbidden,
    );
    // Unknown client and bad fingerprint.
    let nobody = keysafe_proto::ClientFingerprint::parse(&"0".repeat(64)).unwrap();
    assert_code(
        ts.admin.client_action(&nobody, "approve").await,
        ErrorCode::NotFound,
    );
}

async fn admin_org_listing_and_bad_org_names(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    ts.admin
        .create_org(&keysafe_proto::api::OrgCreateRequest {
            name: org("acme"),
            contacts: vec!["ops@acme.example".into()],
        })
        .await
        .unwrap();
    let orgs = ts.admin.list_orgs().await.unwrap().orgs;
    let acme = orgs.iter().find(|o| o.name.as_str() == "acme").unwrap();
    assert_eq!(acme.contacts, vec!["ops@acme.example".to_owned()]);
    assert_eq!(acme.auth_mode, AuthMode::Secret);
    // A bad org name in JSON is refused before anything happens.
    let r = ts
        .admin
        .raw_request(keysafe_client::reqwest::Method::POST, "/v1/admin/orgs")
        .header("content-type", "application/json")
        .body(r#"{"name":"bad name"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let bad_contact = ts
        .admin
        .create_org(&keysafe_proto::api::OrgCreateRequest {
            name: org("beta"),
            contacts: vec!["not-an-address".into()],
        })
        .await;
    assert_code(bad_contact, ErrorCode::BadRequest);
    assert!(
        !ts.admin
            .list_orgs()
            .await
            .unwrap()
            .orgs
            .iter()
            .any(|o| o.name.as_str() == "beta")
    );
}

async fn administrators_are_promoted_not_registered(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    // Nobody registers into the administrators' organisation, with or without a secret.
    assert_code(
        ts.register(keysafe_core::service::ADMIN_ORG, None)
            .await
            .map(|_| ()),
        ErrorCode::Forbidden,
    );
    let c = ts.new_client("acme").await;
    assert_code(c.client.list_orgs().await, ErrorCode::Forbidden);
    let promoted = ts
        .admin
        .client_action(&c.fingerprint, "promote")
        .await
        .unwrap();
    assert_eq!(promoted.role, keysafe_proto::api::ClientRole::Admin);
    // The identity cache was invalidated: the new role applies at once.
    c.client.list_orgs().await.unwrap();
    // A promoted admin cannot demote or disable itself, but can demote others.
    assert_code(
        c.client.client_action(&c.fingerprint, "demote").await,
        ErrorCode::Forbidden,
    );
    let first_admin = ts.admin.whoami().await.unwrap().fingerprint;
    c.client
        .client_action(&first_admin, "demote")
        .await
        .unwrap();
    assert_code(ts.admin.list_orgs().await, ErrorCode::Forbidden);
    c.client
        .client_action(&first_admin, "promote")
        .await
        .unwrap();
    ts.admin
        .client_action(&c.fingerprint, "demote")
        .await
        .unwrap();
    assert_code(c.client.list_orgs().await, ErrorCode::Forbidden);
    // Pending clients cannot be promoted.
    ts.admin
        .set_org_auth(&org("acme"), &OrgSetAuthRequest::Approval)
        .await
        .unwrap();
    let p = ts.register("acme", None).await.unwrap();
    assert_code(
        ts.admin.client_action(&p.fingerprint, "promote").await,
        ErrorCode::InvalidState,
    );
}

// Every test above runs on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(
    register_with_secret_is_active,
    wrong_secret_or_unknown_org_registers_nothing,
    approval_mode_pending_then_approved_then_disabled_then_enabled,
    rotating_the_secret_invalidates_the_old_one,
    secrets_are_stored_only_as_argon2id_hashes,
    duplicate_org_and_double_registration_conflict,
    admin_operations_need_an_admin,
    admin_org_listing_and_bad_org_names,
    administrators_are_promoted_not_registered,
);
