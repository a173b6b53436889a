//! The OpenAPI contract against the real server over real TLS: `GET /v1/openapi.json` is a
//! well-formed OpenAPI 3.1 document whose references all resolve, and every operation it lists
//! is exercised (its success and the errors that are cheap to provoke), each answer checked
//! against the document (`contract.rs`): its status must be documented for that operation, its
//! content type for that status, its documented required headers present, and a JSON body valid
//! against the status's schema (JSON Schema draft 2020-12, which OpenAPI 3.1 schemas are). The
//! tour fails if an operation of the document never answered with a success.

mod contract;

use base64::Engine;
use contract::{Contract, check_refs};
use keysafe_client::reqwest::Method as M;
use keysafe_testkit::{TestClient, TestServer};
use serde_json::{Value, json};

fn wrapped_for(recipient: &str) -> String {
    let ct = keysafe_client::e2e::encrypt(&[recipient.to_owned()], b"a group identity").unwrap();
    base64::engine::general_purpose::STANDARD.encode(ct)
}

fn new_recipient() -> String {
    age::x25519::Identity::generate().to_public().to_string()
}

/// Who takes part in the tour.
struct Cast {
    alice: TestClient,
    bob: TestClient,
    afp: String,
    bfp: String,
    /// Registered over the raw route (`POST /v1/register`), then disabled and deleted.
    carol_fp: String,
    carol: keysafe_client::KeysafeClient,
    _carol_home: tempfile::TempDir,
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let s = TestServer::start().await;
    let anon = s.anonymous_client();

    // The document itself: well-formed OpenAPI 3.1 whose references resolve.
    let r = anon
        .raw_request(M::GET, "/v1/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], json!(env!("CARGO_PKG_VERSION")));
    assert!(doc["info"]["title"].is_string());
    assert!(doc["paths"].as_object().unwrap().len() > 30);
    check_refs(&doc, &doc, "");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["mutualTLS"]["type"], json!("mutualTLS"));
    assert_eq!(schemes["sequencedToken"]["type"], json!("apiKey"));
    assert_eq!(schemes["sequencedToken"]["in"], json!("header"));
    assert_eq!(schemes["sequencedToken"]["name"], json!("x-keysafe-token"));
    // The server serves what the code generates.
    assert_eq!(doc, keysafe_server::openapi_document());
    let mut c = Contract::new(doc);

    let cast = public_and_registration(&mut c, &s).await;
    deposits(&mut c, &s, &cast).await;
    groups(&mut c, &s, &cast).await;
    organisations(&mut c, &s, &cast).await;
    clients(&mut c, &s, &cast).await;
    audit_keyring_cluster(&mut c, &s, &cast).await;
    rate_limit(&mut c, &s).await;
    s.stop().await;
    sealed(&mut c).await;

    let missing = c.not_exercised();
    assert!(missing.is_empty(), "not exercised: {missing:#?}");
}

async fn public_and_registration(c: &mut Contract, s: &TestServer) -> Cast {
    let anon = s.anonymous_client();
    c.req(&anon, M::GET, "/v1/openapi.json").expect(200).await;
    let fp = c.req(&anon, M::GET, "/?a=fingerprint").expect(200).await;
    assert_eq!(fp.header("content-type"), "text/plain; charset=utf-8");
    c.req(&anon, M::GET, "/?a=other").expect(404).await;
    c.req(&anon, M::GET, "/v1/health").expect(200).await;
    c.req(&anon, M::GET, "/v1/audit/public-key")
        .expect(200)
        .await;
    c.req(&anon, M::GET, "/v1/whoami").expect(401).await;

    let secret = s.create_org("acme").await;
    let (home, carol) = s.unregistered_client();
    let reg = |secret: &str| {
        json!({"org": "acme", "auth_secret": secret, "name": "carol",
               "recipient": new_recipient()})
    };
    let register = "/v1/register";
    c.req(&carol, M::POST, register)
        .json(reg("wrong-secret-wrong"))
        .expect(401)
        .await;
    c.req(&carol, M::POST, register)
        .json(json!({"org": 7}))
        .expect(400)
        .await;
    let info = c
        .req(&carol, M::POST, register)
        .json(reg(secret.expose()))
        .expect(201)
        .await;
    assert!(info.headers.contains_key("x-keysafe-token"));
    let carol_fp = info.json()["fingerprint"].as_str().unwrap().to_owned();
    c.req(&carol, M::POST, register)
        .json(reg(secret.expose()))
        .expect(409)
        .await;
    let (_dave_home, dave) = s.unregistered_client();
    let admins = json!({"org": "keysafe-admins", "auth_secret": "whatever-whatever"});
    c.req(&dave, M::POST, register)
        .json(admins)
        .expect(403)
        .await;
    c.req(&carol, M::GET, "/v1/whoami").expect(200).await;

    let alice = s.new_client("acme").await;
    let bob = s.new_client("acme").await;
    Cast {
        afp: alice.fingerprint.to_string(),
        bfp: bob.fingerprint.to_string(),
        alice,
        bob,
        carol_fp,
        carol,
        _carol_home: home,
    }
}

async fn deposits(c: &mut Contract, s: &TestServer, cast: &Cast) {
    let (a, b) = (&cast.alice.client, &cast.bob.client);
    let (afp, bfp) = (&cast.afp, &cast.bfp);
    let key = "/v1/deposits/db/key";
    c.req(a, M::PUT, key).bytes(b"one").expect(201).await;
    c.req(a, M::PUT, key).bytes(b"two").expect(200).await;
    c.req(a, M::PUT, key)
        .header("if-none-match", "*")
        .bytes(b"x")
        .expect(409)
        .await;
    c.req(a, M::PUT, key)
        .header("x-keysafe-encoding", "rot13")
        .bytes(b"x")
        .expect(400)
        .await;
    let big = vec![0u8; s.config.limits().max_deposit_size + 1];
    c.req(a, M::PUT, "/v1/deposits/db/big")
        .bytes(&big)
        .expect(413)
        .await;
    let got = c.req(a, M::GET, key).expect(200).await;
    assert_eq!(got.header("x-keysafe-version"), "2");
    let etag = got.header("etag");
    c.req(a, M::GET, key)
        .header("if-none-match", &etag)
        .expect(304)
        .await;
    c.req(a, M::GET, "/v1/deposits/db/key?version=1")
        .expect(200)
        .await;
    c.req(a, M::GET, "/v1/deposits/db/none").expect(404).await;
    c.req(a, M::GET, "/v1/deposits/db/a%20b").expect(400).await;
    c.req(a, M::GET, "/v1/deposits").expect(200).await;
    c.req(a, M::GET, "/v1/deposits?bogus=1").expect(400).await;
    let others = format!("/v1/deposits?owner={afp}");
    c.req(b, M::GET, &others).expect(403).await;
    c.req(a, M::GET, "/v1/deposits/db/key:versions")
        .expect(200)
        .await;
    c.req(a, M::GET, "/v1/deposits/db/none:versions")
        .expect(404)
        .await;
    let acl = c
        .req(a, M::GET, "/v1/deposits/db/key:acl")
        .expect(200)
        .await;
    let serial = acl.json()["acl_serial"].as_u64().unwrap();
    let share = "/v1/deposits/db/key:share";
    let grant = json!({"change": {"op": "grant", "grantee": bfp, "access": "read"},
                       "expected_version": 2, "expected_acl_serial": serial, "versions": []});
    c.req(a, M::POST, share)
        .json(grant.clone())
        .expect(200)
        .await;
    c.req(a, M::POST, share).json(grant).expect(409).await;
    c.req(a, M::POST, share).json(json!({})).expect(400).await;
    c.req(b, M::GET, "/v1/shared").expect(200).await;
    let owned = format!("{key}?owner={afp}");
    c.req(b, M::GET, &owned).expect(200).await;
    c.req(b, M::DELETE, &owned).expect(403).await;
    let principal = |p: &str| format!("/v1/recipients?principal={p}");
    c.req(a, M::GET, &principal(bfp)).expect(200).await;
    c.req(a, M::GET, &principal(&"0".repeat(64)))
        .expect(404)
        .await;
    c.req(a, M::GET, "/v1/recipients").expect(400).await;
    c.req(a, M::DELETE, key).expect(200).await;
    c.req(a, M::GET, key).expect(409).await;
    c.req(a, M::DELETE, key).expect(409).await;
    let undelete = "/v1/deposits/db/key:undelete";
    c.req(a, M::POST, undelete).expect(200).await;
    c.req(a, M::POST, undelete).expect(409).await;
    let purge = "/v1/deposits/db/key:purge";
    c.req(a, M::POST, purge).expect(200).await;
    c.req(a, M::POST, purge).expect(404).await;
}

async fn groups(c: &mut Contract, s: &TestServer, cast: &Cast) {
    let (a, b, admin) = (&cast.alice.client, &cast.bob.client, &s.admin);
    let (afp, bfp) = (&cast.afp, &cast.bfp);
    let a_rcp = a.whoami().await.unwrap().recipient.unwrap();
    let b_rcp = b.whoami().await.unwrap().recipient.unwrap();
    let team = json!({"name": "team", "recipient": new_recipient(),
                      "members": [{"fingerprint": afp, "wrapped": wrapped_for(&a_rcp)}]});
    c.req(a, M::POST, "/v1/groups")
        .json(team.clone())
        .expect(201)
        .await;
    c.req(a, M::POST, "/v1/groups").json(team).expect(409).await;
    let bad = json!({"name": "x"});
    c.req(a, M::POST, "/v1/groups").json(bad).expect(400).await;
    c.req(a, M::GET, "/v1/groups").expect(200).await;
    let g = c.req(a, M::GET, "/v1/groups/team").expect(200).await;
    let epoch = g.json()["epoch"].as_u64().unwrap();
    c.req(a, M::GET, "/v1/groups/nope").expect(404).await;
    c.req(a, M::GET, "/v1/groups/-bad").expect(400).await;
    c.req(a, M::GET, "/v1/groups/team/keys").expect(200).await;
    c.req(b, M::GET, "/v1/groups/team/keys").expect(404).await;
    let add = "/v1/admin/groups/acme/team/add-member";
    let bob = json!({"member": bfp});
    c.req(admin, M::POST, add)
        .json(bob.clone())
        .expect(200)
        .await;
    c.req(admin, M::POST, add)
        .json(bob.clone())
        .expect(409)
        .await;
    let nope = "/v1/admin/groups/acme/nope/add-member";
    c.req(admin, M::POST, nope).json(bob).expect(404).await;
    let admit = json!({"member": bfp, "keys": [{"epoch": epoch, "wrapped": wrapped_for(&b_rcp)}]});
    let to_team = "/v1/groups/team/admit";
    c.req(a, M::POST, to_team)
        .json(admit.clone())
        .expect(200)
        .await;
    c.req(a, M::POST, "/v1/groups/nope/admit")
        .json(admit)
        .expect(404)
        .await;
    let remove = "/v1/admin/groups/acme/team/remove-member";
    let remove_bob = |expected: u64| {
        json!({"member": bfp, "expected_epoch": expected, "recipient": new_recipient(),
               "keys": [{"fingerprint": afp, "wrapped": wrapped_for(&a_rcp)}]})
    };
    c.req(admin, M::POST, remove)
        .json(remove_bob(epoch + 7))
        .expect(409)
        .await;
    c.req(admin, M::POST, remove)
        .json(remove_bob(epoch))
        .expect(200)
        .await;

    // The administrators' view of groups.
    let all = "/v1/admin/groups";
    c.req(admin, M::GET, all).expect(200).await;
    c.req(admin, M::GET, "/v1/admin/groups?org=-bad")
        .expect(400)
        .await;
    let ops = json!({"org": "acme", "name": "ops", "recipient": new_recipient(),
                     "members": [{"fingerprint": bfp, "wrapped": wrapped_for(&b_rcp)}]});
    c.req(admin, M::POST, all)
        .json(ops.clone())
        .expect(201)
        .await;
    c.req(admin, M::POST, all).json(ops).expect(409).await;
    let one = "/v1/admin/groups/acme/ops";
    c.req(admin, M::GET, one).expect(200).await;
    c.req(admin, M::DELETE, one).expect(200).await;
    c.req(admin, M::GET, one).expect(404).await;
    c.req(admin, M::DELETE, one).expect(404).await;
}

async fn organisations(c: &mut Contract, s: &TestServer, cast: &Cast) {
    let admin = &s.admin;
    let orgs = "/v1/admin/orgs";
    c.req(&cast.alice.client, M::GET, orgs).expect(403).await;
    c.req(admin, M::GET, orgs).expect(200).await;
    let other = json!({"name": "other"});
    c.req(admin, M::POST, orgs)
        .json(other.clone())
        .expect(201)
        .await;
    c.req(admin, M::POST, orgs).json(other).expect(409).await;
    let padded = json!({"name": "x".repeat(70 * 1024)});
    c.req(admin, M::POST, orgs).json(padded).expect(413).await;
    let random = json!({"mode": "random"});
    let auth = "/v1/admin/orgs/other/auth";
    c.req(admin, M::PUT, auth)
        .json(random.clone())
        .expect(200)
        .await;
    c.req(admin, M::PUT, "/v1/admin/orgs/nope/auth")
        .json(random)
        .expect(404)
        .await;
    c.req(admin, M::PUT, auth)
        .json(json!({"mode": "?"}))
        .expect(400)
        .await;
    let tokens = "/v1/admin/orgs/other/tokens";
    c.req(admin, M::POST, tokens)
        .json(json!({}))
        .expect(201)
        .await;
    c.req(admin, M::POST, "/v1/admin/orgs/nope/tokens")
        .json(json!({}))
        .expect(404)
        .await;
    let list = c.req(admin, M::GET, tokens).expect(200).await;
    let id = list.json()["tokens"][0]["id"].as_str().unwrap().to_owned();
    let by_id = format!("{tokens}/{id}");
    c.req(admin, M::DELETE, &by_id).expect(200).await;
    c.req(admin, M::DELETE, &by_id).expect(404).await;
    c.req(admin, M::POST, tokens)
        .json(json!({}))
        .expect(201)
        .await;
    c.req(admin, M::DELETE, tokens).expect(200).await;
    c.req(admin, M::DELETE, "/v1/admin/orgs/nope/tokens")
        .expect(404)
        .await;
    c.req(admin, M::DELETE, "/v1/admin/orgs/acme")
        .expect(409)
        .await;
    c.req(admin, M::DELETE, "/v1/admin/orgs/other?dry_run=true")
        .expect(200)
        .await;
    c.req(admin, M::DELETE, "/v1/admin/orgs/other")
        .expect(200)
        .await;
    c.req(admin, M::DELETE, "/v1/admin/orgs/other")
        .expect(404)
        .await;
}

async fn clients(c: &mut Contract, s: &TestServer, cast: &Cast) {
    let admin = &s.admin;
    c.req(admin, M::GET, "/v1/admin/clients").expect(200).await;
    c.req(admin, M::GET, "/v1/admin/clients?state=bogus")
        .expect(400)
        .await;
    let dry = json!({"older_than_seconds": 86400, "dry_run": true});
    c.req(admin, M::POST, "/v1/admin/clients/disable-unactivated")
        .json(dry)
        .expect(200)
        .await;
    let carol = format!("/v1/admin/clients/{}", cast.carol_fp);
    c.req(admin, M::POST, &format!("{carol}/approve"))
        .expect(409)
        .await;
    c.req(admin, M::POST, &format!("{carol}/frobnicate"))
        .expect(404)
        .await;
    c.req(admin, M::POST, "/v1/admin/clients/xyz/disable")
        .expect(400)
        .await;
    c.req(admin, M::POST, &format!("{carol}/disable"))
        .expect(200)
        .await;
    c.req(&cast.carol, M::GET, "/v1/whoami").expect(403).await;
    let alice = format!("/v1/admin/clients/{}", cast.afp);
    c.req(admin, M::DELETE, &alice).expect(409).await;
    c.req(admin, M::DELETE, &carol).expect(200).await;
    c.req(admin, M::DELETE, &carol).expect(404).await;
}

async fn audit_keyring_cluster(c: &mut Contract, s: &TestServer, cast: &Cast) {
    let admin = &s.admin;
    c.req(admin, M::GET, "/v1/admin/audit/entries?limit=5")
        .expect(200)
        .await;
    c.req(admin, M::GET, "/v1/admin/audit/entries?since=yesterday")
        .expect(400)
        .await;
    c.req(&cast.bob.client, M::GET, "/v1/admin/audit/entries")
        .expect(403)
        .await;
    s.app
        .state
        .audit
        .flush(std::time::Duration::from_secs(30))
        .await;
    let cp = c
        .req(admin, M::POST, "/v1/admin/audit/checkpoint")
        .expect(200)
        .await;
    let through = cp.json()["seq"].as_u64().unwrap();
    c.req(admin, M::GET, "/v1/admin/audit/checkpoints")
        .expect(200)
        .await;
    c.req(admin, M::GET, "/v1/admin/audit/checkpoints?from=x")
        .expect(400)
        .await;
    let prune = "/v1/admin/audit/prune";
    let digest = "ab".repeat(32);
    c.req(admin, M::POST, prune)
        .json(json!({"through": through, "archive_sha256": "not hex"}))
        .expect(400)
        .await;
    c.req(admin, M::POST, prune)
        .json(json!({"through": through + 1_000_000, "archive_sha256": digest}))
        .expect(400)
        .await;
    c.req(&cast.bob.client, M::POST, prune)
        .json(json!({"through": through, "archive_sha256": digest}))
        .expect(403)
        .await;
    // Entries after the checkpoint are committed: it is not the head any more.
    s.app
        .state
        .audit
        .flush(std::time::Duration::from_secs(30))
        .await;
    c.req(admin, M::POST, prune)
        .json(json!({"through": through, "archive_sha256": digest}))
        .expect(200)
        .await;

    c.req(admin, M::POST, "/v1/admin/integrity/verify")
        .expect(200)
        .await;
    c.req(&cast.bob.client, M::POST, "/v1/admin/integrity/verify")
        .expect(403)
        .await;

    let keyring = "/v1/admin/keyring";
    c.req(admin, M::GET, keyring).expect(200).await;
    let rotated = c
        .req(admin, M::POST, "/v1/admin/keyring/rotate")
        .expect(200)
        .await;
    let current = rotated.json()["version"].as_u64().unwrap();
    let retire = "/v1/admin/keyring/retire";
    c.req(admin, M::POST, retire)
        .json(json!({"version": current}))
        .expect(409)
        .await;
    c.req(admin, M::POST, retire)
        .json(json!({"version": 99}))
        .expect(404)
        .await;
    // Version 1 retires once the re-wrap job has moved every key off it.
    let mut unused = false;
    for _ in 0..150 {
        let st = admin.keyring_status().await.unwrap();
        let v1 = st.versions.iter().find(|v| v.version == 1);
        if v1.is_none_or(|v| v.usage.iter().all(|u| u.count == 0)) {
            unused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(unused, "the re-wrap job never freed keyring version 1");
    c.req(admin, M::POST, retire)
        .json(json!({"version": 1}))
        .expect(200)
        .await;
    let not_sealed = json!({"passphrase": "not sealed"});
    c.req(admin, M::POST, "/v1/admin/unseal")
        .json(not_sealed)
        .expect(409)
        .await;
    let backup = "/v1/admin/backup";
    let to_me = json!({"recipients": [new_recipient()]});
    c.req(admin, M::POST, backup).json(to_me).expect(200).await;
    let bad = json!({"recipients": ["nope"]});
    c.req(admin, M::POST, backup).json(bad).expect(400).await;

    let status = c.req(admin, M::GET, "/v1/admin/cluster").expect(200).await;
    let me = status.json()["answered_by"].as_str().unwrap().to_owned();
    c.req(admin, M::DELETE, "/v1/admin/cluster/nodes/gone-node")
        .expect(404)
        .await;
    let this_node = format!("/v1/admin/cluster/nodes/{me}");
    c.req(admin, M::DELETE, &this_node).expect(204).await;
}

/// Last on its server: it locks the source address out of registering.
async fn rate_limit(c: &mut Contract, s: &TestServer) {
    let (_home, eve) = s.unregistered_client();
    let bad = json!({"org": "acme", "auth_secret": "wrong-secret-wrong"});
    let mut limited = false;
    for _ in 0..20 {
        let r = eve
            .raw_request(M::POST, "/v1/register")
            .header("content-type", "application/json")
            .body(bad.to_string())
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the failure limit never answered 429");
    let after = c
        .req(&eve, M::POST, "/v1/register")
        .json(bad)
        .expect(429)
        .await;
    assert!(after.header("retry-after").parse::<u64>().unwrap() >= 1);
}

/// A passphrase seal: the server starts sealed (health and deposits answer 503) and is
/// unsealed over the API.
async fn sealed(c: &mut Contract) {
    const PASSPHRASE: &str = "correct horse battery staple";
    let s = TestServer::start_with_init(
        |o| {
            o.seal.kind = "passphrase".into();
            o.passphrase = Some(zeroize::Zeroizing::new(PASSPHRASE.into()));
        },
        |_| {},
    )
    .await;
    let anon = s.anonymous_client();
    let admin = &s.admin;
    let same = anon
        .raw_request(M::GET, "/v1/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(same.json::<Value>().await.unwrap(), c.doc);
    let health = c.req(&anon, M::GET, "/v1/health").expect(503).await;
    assert_eq!(health.json()["status"], json!("sealed"));
    // Registration needs the seal (a new client's row is authenticated with a key the keyring
    // holds): 503 while sealed.
    let secret = s.create_org("acme").await;
    let (_newcomer_home, newcomer) = s.unregistered_client();
    let reg = c
        .req(&newcomer, M::POST, "/v1/register")
        .json(json!({"org": "acme", "auth_secret": secret.expose()}))
        .expect(503)
        .await;
    assert_eq!(reg.json()["error"]["code"], json!("sealed"));
    let put = c
        .req(admin, M::PUT, "/v1/deposits/k")
        .bytes(b"v")
        .expect(503)
        .await;
    assert_eq!(put.json()["error"]["code"], json!("sealed"));
    let unseal = "/v1/admin/unseal";
    let pass = |p: &str| json!({"passphrase": p});
    c.req(admin, M::POST, unseal)
        .json(pass("not the passphrase"))
        .expect(403)
        .await;
    let open = c
        .req(admin, M::POST, unseal)
        .json(pass(PASSPHRASE))
        .expect(200)
        .await;
    assert_eq!(open.json()["sealed"], json!(false));
    c.req(admin, M::POST, unseal)
        .json(pass(PASSPHRASE))
        .expect(409)
        .await;
    let client = s.new_client("acme").await.client;
    c.req(&client, M::POST, unseal)
        .json(pass(PASSPHRASE))
        .expect(403)
        .await;
    c.req(&client, M::PUT, "/v1/deposits/k")
        .bytes(b"v")
        .expect(201)
        .await;
    c.req(&anon, M::GET, "/v1/health").expect(200).await;
    s.stop().await;
}
