//! The lifecycle commands through the binary: `org|client|group delete` (a plan without
//! `--yes`, a refusal naming what depends), `org tokens|token-revoke`, `client
//! disable-unactivated --dry-run`, `client list --limit/--after`, `audit export` without
//! `--since` and with a date, and the offline `recover-admin`.

use crate::{fails_with, keysafe, ok, run};
use keysafe_client::{ClientError, KeysafeClient, Precondition};
use keysafe_proto::api::{ClientRole, ClientState};
use keysafe_proto::{DepositName, ErrorCode, GroupName, OrgName};
use keysafe_testkit::{TestServer, TestStorage};
use std::path::Path;
use std::time::Duration;

fn admin(tmp: &Path, data_dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = keysafe(tmp);
    c.args(["admin", "--data-dir"]).arg(data_dir).args(args);
    c
}

#[track_caller]
fn api_code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Api { code, .. }) => code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn delete_commands_plan_refuse_and_delete(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let tmp = tempfile::tempdir().unwrap();
    let (t, d) = (tmp.path(), ts.data_dir.as_path());
    let owner = ts.new_client("acme").await;
    let other = ts.new_client("acme").await;
    let n = DepositName::parse("db/key").unwrap();
    owner
        .client
        .put(&n, b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    let (fo, fx) = (owner.fingerprint.to_string(), other.fingerprint.to_string());

    // Refused, with what depends, whether or not --yes is given: exit 5.
    let err = fails_with(
        &run(admin(t, d, &["client", "delete", &fo, "--yes"])).await,
        5,
    );
    assert!(
        err.contains("owns 1 deposit (db/key)") && err.contains("in_use"),
        "{err}"
    );
    let err = fails_with(&run(admin(t, d, &["org", "delete", "acme"])).await, 5);
    assert!(err.contains("2 clients"), "{err}");
    // Without --yes: the plan, exit 2, nothing deleted.
    let o = run(admin(t, d, &["client", "delete", &fx])).await;
    let err = fails_with(&o, 2);
    assert!(err.contains("--yes"), "{err}");
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(
        plan.contains(&format!("Would delete client {fx} of organisation acme")),
        "{plan}"
    );
    other.client.whoami().await.unwrap();
    // With --yes: deleted; the client is unknown from then on.
    let out = ok(&run(admin(t, d, &["client", "delete", &fx, "--yes"])).await);
    assert!(out.starts_with(&format!("Deleted client {fx}")), "{out}");
    assert_eq!(
        api_code(other.client.whoami().await),
        ErrorCode::UnknownClient
    );
    // Again: not found (exit 3); a malformed fingerprint: usage (exit 2).
    fails_with(
        &run(admin(t, d, &["client", "delete", &fx, "--yes"])).await,
        3,
    );
    fails_with(
        &run(admin(
            t,
            d,
            &["client", "delete", "not-a-fingerprint", "--yes"],
        ))
        .await,
        2,
    );

    // A group: planned, refused while a deposit is shared with it, then deleted.
    let acme = OrgName::parse("acme").unwrap();
    let g = GroupName::parse("kms").unwrap();
    keysafe_client::vault::admin_create_group(
        &ts.admin,
        &acme,
        &g,
        std::slice::from_ref(&owner.fingerprint),
    )
    .await
    .unwrap();
    owner
        .vault()
        .change_acl(
            None,
            &n,
            keysafe_proto::api::AclChange::Grant {
                grantee: "group:kms".into(),
                access: keysafe_proto::api::Access::Read,
            },
            &|_, _| {},
        )
        .await
        .unwrap();
    let err = fails_with(
        &run(admin(
            t,
            d,
            &["group", "delete", "kms", "--org", "acme", "--yes"],
        ))
        .await,
        5,
    );
    assert!(err.contains("grantee of 1 deposit"), "{err}");
    owner.client.delete(&n).await.unwrap();
    owner.client.purge(&n).await.unwrap();
    let o = run(admin(t, d, &["group", "delete", "kms", "--org", "acme"])).await;
    fails_with(&o, 2);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Would delete group acme/kms"));
    ts.admin.admin_group(&acme, &g).await.unwrap();
    ok(&run(admin(
        t,
        d,
        &["group", "delete", "kms", "--org", "acme", "--yes"],
    ))
    .await);
    assert_eq!(
        api_code(ts.admin.admin_group(&acme, &g).await),
        ErrorCode::NotFound
    );

    // The last client, then the organisation with its unused token; --json says what went.
    ok(&run(admin(t, d, &["client", "delete", &fo, "--yes"])).await);
    ok(&run(admin(t, d, &["org", "token", "acme"])).await);
    let out = ok(&run(admin(t, d, &["--json", "org", "delete", "acme", "--yes"])).await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["unused_tokens"], 1);
    fails_with(
        &run(admin(t, d, &["org", "delete", "acme", "--yes"])).await,
        3,
    );
    // The administrators' organisation is never deleted (exit 4: forbidden).
    fails_with(
        &run(admin(t, d, &["org", "delete", "keysafe-admins", "--yes"])).await,
        4,
    );
}

async fn tokens_listing_preview_and_audit_export(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let tmp = tempfile::tempdir().unwrap();
    let (t, d) = (tmp.path(), ts.data_dir.as_path());
    ts.create_org("acme").await;
    let tok = ok(&run(admin(t, d, &["--json", "org", "token", "acme"])).await);
    let tok: serde_json::Value = serde_json::from_str(&tok).unwrap();
    let token = tok["token"].as_str().unwrap().to_owned();
    ok(&run(admin(t, d, &["org", "token", "acme"])).await);

    // The table has a header for every column, and never shows a token.
    let out = ok(&run(admin(t, d, &["org", "tokens", "acme"])).await);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    for col in ["ID", "CREATED", "EXPIRES", "STATE", "CREATED BY"] {
        assert!(header.contains(col), "{out}");
    }
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(!out.contains(&token) && !out.contains(&token[4..]), "{out}");
    let id = rows[0].split_whitespace().next().unwrap().to_owned();
    // Bad ids: usage (2) and not found (3); missing both id and --all: clap's usage error.
    fails_with(
        &run(admin(t, d, &["org", "token-revoke", "acme", "abc"])).await,
        2,
    );
    fails_with(
        &run(admin(
            t,
            d,
            &["org", "token-revoke", "acme", "0123456789ab"],
        ))
        .await,
        3,
    );
    let o = run(admin(t, d, &["org", "token-revoke", "acme"])).await;
    assert_eq!(o.status.code(), Some(2));
    let o = run(admin(t, d, &["org", "token-revoke", "acme", &id, "--all"])).await;
    assert_eq!(o.status.code(), Some(2));
    let out = ok(&run(admin(t, d, &["org", "token-revoke", "acme", &id[..8]])).await);
    assert!(
        out.contains("Revoked 1 unused registration token(s) of acme"),
        "{out}"
    );
    let out = ok(&run(admin(t, d, &["org", "token-revoke", "acme", "--all"])).await);
    assert!(out.contains("Revoked 1 "), "{out}");
    let out = ok(&run(admin(t, d, &["org", "tokens", "acme"])).await);
    assert!(out.contains("no unused registration tokens"), "{out}");
    // The revoked token registers nobody.
    assert_eq!(
        api_code(
            ts.register("acme", Some(keysafe_proto::api::AuthSecret::new(token)))
                .await
                .map(|c| c.fingerprint)
        ),
        ErrorCode::InvalidAuth
    );

    // disable-unactivated --dry-run lists and disables nothing.
    let unused = ts.new_client("acme").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let out = ok(&run(admin(
        t,
        d,
        &[
            "client",
            "disable-unactivated",
            "--older-than",
            "1ms",
            "--dry-run",
        ],
    ))
    .await);
    assert!(out.starts_with("Would disable 1 client(s)"), "{out}");
    assert!(out.contains(unused.fingerprint.as_str()), "{out}");
    unused.client.whoami().await.unwrap();

    // client list, one page at a time: the next page is named on stderr.
    for _ in 0..2 {
        ts.new_client("acme").await;
    }
    let o = run(admin(t, d, &["client", "list", "--limit", "2"])).await;
    let out = ok(&o);
    assert_eq!(out.lines().count(), 3, "header and two rows: {out}");
    let hint = String::from_utf8_lossy(&o.stderr).into_owned();
    let after = hint
        .trim()
        .strip_prefix("More clients follow: add --after ")
        .unwrap_or_else(|| panic!("{hint}"))
        .to_owned();
    // Column widths differ from page to page: compare fingerprints.
    let first_words = |s: &str| -> Vec<String> {
        s.lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    };
    let mut seen = first_words(&out);
    let mut next = Some(after);
    while let Some(a) = next.take() {
        let o = run(admin(
            t,
            d,
            &["client", "list", "--limit", "2", "--after", &a],
        ))
        .await;
        seen.extend(first_words(&ok(&o)));
        let hint = String::from_utf8_lossy(&o.stderr).into_owned();
        next = hint
            .trim()
            .strip_prefix("More clients follow: add --after ")
            .map(str::to_owned);
    }
    let whole = ok(&run(admin(t, d, &["client", "list"])).await);
    let whole = first_words(&whole);
    // The administrator and three clients: two pages.
    assert_eq!(whole.len(), 4);
    assert_eq!(seen, whole);
    fails_with(
        &run(admin(t, d, &["client", "list", "--limit", "0"])).await,
        2,
    );
    fails_with(
        &run(admin(
            t,
            d,
            &["client", "list", "--limit", "2", "--after", "junk"],
        ))
        .await,
        2,
    );
    // --after needs --limit (clap).
    let o = run(admin(t, d, &["client", "list", "--after", "x"])).await;
    assert_eq!(o.status.code(), Some(2));

    // audit export: everything without --since (from entry 1), from a date with it.
    ts.app.state.audit.flush(Duration::from_secs(30)).await;
    let all = ok(&run(admin(t, d, &["audit", "export"])).await);
    let entries: Vec<serde_json::Value> = all
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("entry").cloned())
        .collect();
    assert_eq!(entries[0]["seq"], 1, "{all}");
    assert!(entries.len() > 10);
    let dated = ok(&run(admin(t, d, &["audit", "export", "--since", "2000-01-01"])).await);
    // From 2000 on is everything, from entry 1 (the exports themselves are recorded too, so
    // this one holds more).
    let first_dated = dated
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find_map(|v| v.get("entry").cloned())
        .unwrap();
    assert_eq!(first_dated["seq"], 1, "{dated}");
    assert!(dated.lines().count() > all.lines().count());
    let future = ok(&run(admin(t, d, &["audit", "export", "--since", "2999-01-01"])).await);
    assert!(!future.contains("\"entry\""), "{future}");
    let err = fails_with(
        &run(admin(t, d, &["audit", "export", "--since", "yesterday"])).await,
        2,
    );
    assert!(err.contains("2026-12-01"), "{err}");
    ok(&run(admin(t, d, &["audit", "verify"])).await);
    // An export that fails part way (here: a client that is not an administrator; the public
    // key is public, the entries are not) leaves no partial file behind.
    let partial = t.join("partial.jsonl");
    let mut c = keysafe(t);
    c.args(["admin", "--home"])
        .arg(unused.home_dir())
        .args(["audit", "export", "--output"])
        .arg(&partial);
    fails_with(&run(c).await, 4);
    assert!(!partial.exists());
}

/// Locks the administrator out as a clone detection does (the server's own store marks it, so
/// the row stays authenticated, ADR 0013): what `recover-admin` exists for.
async fn lock_out(ts: &TestServer, fp: &str) {
    ts.service()
        .store()
        .apply(keysafe_core::store::Mutation::MarkSuspectedClone {
            fingerprint: keysafe_proto::ClientFingerprint::parse(fp).unwrap(),
            reason: "locked out by the test".into(),
            at: keysafe_proto::Timestamp::now(),
        })
        .await
        .unwrap();
    // Past the identity cache.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn recover_admin_offline(storage: TestStorage) {
    let ts = TestServer::start_on_with(storage, |c| {
        c.identity_cache_ttl = Duration::from_millis(200);
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let (t, d) = (tmp.path(), ts.data_dir.as_path());
    let fa = ts.summary.admin_fingerprint.to_string();
    let home = tmp.path().join("recovered");
    let new_home = home.to_str().unwrap();

    // While an administrator is active: refused (exit 5), nothing created.
    let err = fails_with(
        &run(admin(t, d, &["recover-admin", "--new-home", new_home])).await,
        5,
    );
    assert!(
        err.contains("active administrator exists") && err.contains(&fa),
        "{err}"
    );
    assert!(!home.exists());
    // Without --data-dir, with both or neither target, with a bad fingerprint: usage.
    let mut c = keysafe(t);
    c.args(["admin", "recover-admin", "--new-home", new_home]);
    fails_with(&run(c).await, 2);
    let o = run(admin(t, d, &["recover-admin"])).await;
    assert_eq!(o.status.code(), Some(2));
    let o = run(admin(
        t,
        d,
        &["recover-admin", "--new-home", new_home, "--reset", &fa],
    ))
    .await;
    assert_eq!(o.status.code(), Some(2));
    fails_with(
        &run(admin(t, d, &["recover-admin", "--reset", "xyz", "--force"])).await,
        2,
    );
    // An existing directory is not overwritten.
    fails_with(
        &run(admin(
            t,
            d,
            &[
                "recover-admin",
                "--new-home",
                t.to_str().unwrap(),
                "--force",
            ],
        ))
        .await,
        2,
    );

    // A certificate that cannot be read: refused before anything is registered, and no
    // half-made home is left.
    let cert = d.join("tls/server.crt");
    let aside = d.join("tls/server.crt.aside");
    std::fs::rename(&cert, &aside).unwrap();
    let o = run(admin(
        t,
        d,
        &["recover-admin", "--new-home", new_home, "--force"],
    ))
    .await;
    std::fs::rename(&aside, &cert).unwrap();
    let err = fails_with(&o, 8);
    assert!(err.contains("server.crt"), "{err}");
    assert!(!home.exists());
    let admins = ts
        .admin
        .list_clients(None, None)
        .await
        .unwrap()
        .clients
        .iter()
        .filter(|c| c.role == ClientRole::Admin)
        .count();
    assert_eq!(admins, 1);

    // Without the seal (the root key file is not there) the recovery cannot authenticate the
    // row it would write: refused before anything changes.
    lock_out(&ts, &fa).await;
    let key = ts.summary.root_key.clone();
    let key_aside = key.with_extension("aside");
    std::fs::rename(&key, &key_aside).unwrap();
    let o = run(admin(t, d, &["recover-admin", "--reset", &fa])).await;
    std::fs::rename(&key_aside, &key).unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("seal key"), "{err}");
    assert_eq!(api_code(ts.admin.whoami().await), ErrorCode::SuspectedClone);

    // Locked out: the administrator is refused.
    lock_out(&ts, &fa).await;
    assert_eq!(api_code(ts.admin.whoami().await), ErrorCode::SuspectedClone);
    fails_with(&run(admin(t, d, &["client", "list"])).await, 7);
    // An unknown client: not found (exit 3).
    fails_with(
        &run(admin(t, d, &["recover-admin", "--reset", &"ab".repeat(32)])).await,
        3,
    );
    // Reset: the same identity is an active administrator again, beside the running server.
    let out = ok(&run(admin(t, d, &["recover-admin", "--reset", &fa])).await);
    assert!(out.contains("active administrator again"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = ok(&run(admin(t, d, &["client", "list"])).await);
    assert!(list.contains(&fa) && list.contains("active"), "{list}");

    // Locked out again: a new administrator in a new home, which works at once.
    lock_out(&ts, &fa).await;
    let out = ok(&run(admin(
        t,
        d,
        &[
            "--json",
            "recover-admin",
            "--new-home",
            new_home,
            "--name",
            "ops-2",
        ],
    ))
    .await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fresh = v["client"]["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(v["client"]["role"], "admin");
    assert_eq!(v["client"]["state"], "active");
    assert_eq!(v["client"]["org"], "keysafe-admins");
    assert_eq!(v["home"], new_home);
    let mut c = keysafe(t);
    c.args(["admin", "--home", new_home, "client", "list"]);
    let list = ok(&run(c).await);
    assert!(list.contains(&fresh), "{list}");
    // The new administrator can unlock the old one the usual way.
    let mut c = keysafe(t);
    c.args(["admin", "--home", new_home, "client", "reset-token", &fa]);
    ok(&run(c).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ts.admin.whoami().await.unwrap().state, ClientState::Active);
    let fresh_client =
        KeysafeClient::from_home(&keysafe_client::ClientHome::load(&home).unwrap()).unwrap();
    assert_eq!(fresh_client.whoami().await.unwrap().role, ClientRole::Admin);

    // Both recoveries are in the audit chain, which still verifies.
    ts.app.state.audit.flush(Duration::from_secs(30)).await;
    let mut c = keysafe(t);
    c.args(["admin", "--home", new_home, "audit", "export"]);
    let export = ok(&run(c).await);
    let recoveries = export
        .lines()
        .filter(|l| l.contains("OFFLINE recover-admin"))
        .count();
    assert_eq!(recoveries, 2, "{export}");
    let mut c = keysafe(t);
    c.args(["admin", "--home", new_home, "audit", "verify"]);
    ok(&run(c).await);
}

/// `keysafe admin integrity verify`, offline on the data directory beside the running server
/// and over the API: clean, then each tampered row listed with exit 7.
async fn integrity_verify_offline_and_over_the_api(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(
            &DepositName::parse("k").unwrap(),
            b"v".to_vec(),
            Precondition::None,
        )
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (t, d) = (tmp.path(), ts.data_dir.as_path());
    let out = ok(&run(admin(t, d, &["integrity", "verify"])).await);
    assert!(out.contains("0 failed"), "{out}");
    let mut db = ts.raw_db().await;
    let sql = if db.dialect() == "postgres" {
        "UPDATE clients SET role = 'admin' WHERE fingerprint = $1"
    } else {
        "UPDATE clients SET role = 'admin' WHERE fingerprint = ?1"
    };
    db.execute(sql, &[c.fingerprint.as_str().into()])
        .await
        .unwrap();
    let o = run(admin(t, d, &["--json", "integrity", "verify"])).await;
    fails_with(&o, 7);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["failures"],
        serde_json::json!([{
            "kind": "client",
            "key": c.fingerprint.as_str(),
            "reason": "MAC does not match"
        }])
    );
    // Over the API (an administrator home): the same report.
    let mut api = keysafe(t);
    api.args(["admin", "--home"])
        .arg(d.join("admin"))
        .args(["integrity", "verify"]);
    let o = run(api).await;
    let out = fails_with(&o, 7);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("FAILED  client {}", c.fingerprint)),
        "{stdout} {out}"
    );
}

keysafe_testkit::storage_tests!(multi_thread:
    delete_commands_plan_refuse_and_delete,
    integrity_verify_offline_and_over_the_api,
    tokens_listing_preview_and_audit_export,
    recover_admin_offline,
);
