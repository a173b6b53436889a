//! `keysafe admin audit verify|export` through the binary, the documented independent check of
//! an export (docs/audit.md's Python script), and the secrets scan: a full scenario against a
//! real `keysafe serve` at trace level, searched for every secret it used.

use crate::{
    anonymous_client, fails_with, free_port, keysafe, ok, run, run_with_stdin, wait_healthy,
};
use keysafe_client::Precondition;
use keysafe_proto::DepositName;
use keysafe_testkit::{TestServer, TestStorage};
use std::path::Path;
use std::process::Stdio;

fn admin(tmp: &Path, data_dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = keysafe(tmp);
    c.args(["admin", "--data-dir"]).arg(data_dir).args(args);
    c
}

/// The verification script exactly as docs/audit.md shows it.
pub(crate) fn documented_script(dir: &Path) -> std::path::PathBuf {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/audit.md"))
            .unwrap();
    let after = doc.split("<!-- verify-export.py -->").nth(1).unwrap();
    let code = after
        .split("```python\n")
        .nth(1)
        .unwrap()
        .split("\n```")
        .next()
        .unwrap();
    let p = dir.join("verify.py");
    std::fs::write(&p, code).unwrap();
    p
}

pub(crate) fn python(script: &Path, export: &Path) -> std::process::Output {
    std::process::Command::new("python3")
        .arg(script)
        .arg(export)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

async fn verify_export_and_the_documented_independent_check(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let tmp = tempfile::tempdir().unwrap();
    let c = ts.new_client("acme").await;
    let n = DepositName::parse("db/key").unwrap();
    c.client
        .put(&n, b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    c.client.get(&n, None).await.unwrap();
    ts.app
        .state
        .audit
        .flush(std::time::Duration::from_secs(30))
        .await;
    ts.admin.audit_checkpoint_now().await.unwrap().unwrap();

    let out = ok(&run(admin(tmp.path(), &ts.data_dir, &["audit", "verify"])).await);
    assert!(out.contains("Audit trail verified"), "{out}");
    let out = ok(&run(admin(
        tmp.path(),
        &ts.data_dir,
        &["audit", "verify", "--json"],
    ))
    .await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["broken"].is_null());
    assert!(v["entries"].as_u64().unwrap() >= 5);

    let export = tmp.path().join("audit.jsonl");
    ok(&run({
        let mut c = admin(
            tmp.path(),
            &ts.data_dir,
            &[
                "audit",
                "export",
                "--since",
                "2000-01-01T00:00:00Z",
                "--output",
            ],
        );
        c.arg(&export);
        c
    })
    .await);
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(text.lines().next().unwrap().contains("\"public_key\""));
    assert!(text.contains("\"checkpoint\""));

    // The documented procedure accepts the export and refuses an edited one.
    let script = documented_script(tmp.path());
    let o = python(&script, &export);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("OK: "));
    let edited = tmp.path().join("edited.jsonl");
    std::fs::write(
        &edited,
        text.replacen("/v1/deposits/db/key", "/v1/deposits/db/kez", 1),
    )
    .unwrap();
    let o = python(&script, &edited);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("BROKEN at entry"));
    // Cut the tail from the last signed entry on: the checkpoint gives it away.
    let signed = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["checkpoint"]["seq"].as_u64())
        .max()
        .unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["entry"]["seq"].as_u64().is_none_or(|s| s < signed)
        })
        .collect();
    let cut = tmp.path().join("cut.jsonl");
    std::fs::write(&cut, lines.join("\n")).unwrap();
    let o = python(&script, &cut);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("truncated"));

    // A bad --since is a usage error; a tampered row makes verify fail with exit 7, naming it.
    fails_with(
        &run(admin(
            tmp.path(),
            &ts.data_dir,
            &["audit", "export", "--since", "yesterday"],
        ))
        .await,
        2,
    );
    ts.raw_db()
        .await
        .execute(
            "UPDATE audit_log SET outcome = 'forbidden' WHERE seq = 3",
            &[],
        )
        .await
        .unwrap();
    let err = fails_with(
        &run(admin(tmp.path(), &ts.data_dir, &["audit", "verify"])).await,
        7,
    );
    assert!(err.contains("broken at entry 3 (edited)"), "{err}");
}

async fn anon_public_key(url: &str) -> String {
    anonymous_client(url)
        .audit_public_key()
        .await
        .unwrap()
        .public_key
}

fn contains(hay: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    !n.is_empty() && hay.windows(n.len()).any(|w| w == n)
}

/// Every secret of a full scenario, searched for in the trace-level log, the audit entries (in
/// the database and in the file sink) and the metrics.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_logs_audit_entries_or_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port("127.0.0.1");
    let mport = free_port("127.0.0.1");
    // The passphrase seal, so that the passphrase is one of the secrets searched for.
    let passphrase = "correct-horse-PASSPHRASE-6e0f2a9d";
    let pass_file = tmp.path().join("passphrase");
    std::fs::write(&pass_file, passphrase).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    ok(&run({
        let mut c = keysafe(tmp.path());
        c.args(["init", "--data-dir"])
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--seal", "passphrase", "--passphrase-file"])
            .arg(&pass_file);
        c
    })
    .await);
    let toml = dir.join("keysafe.toml");
    let cfg = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        cfg.replacen("file = \"\"", "file = \"audit.jsonl\"", 1),
    )
    .unwrap();
    let log = tmp.path().join("serve.log");
    let log2 = tmp.path().join("serve2.log");
    let serve = |log: &Path| {
        let mut serve = keysafe(tmp.path());
        serve
            .args(["serve", "--data-dir"])
            .arg(&dir)
            .args(["--metrics-listen", &format!("127.0.0.1:{mport}")])
            .arg("--passphrase-file")
            .arg(&pass_file)
            .env("KEYSAFE_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        crate::Serve(Some(serve.spawn().unwrap()))
    };
    let child = serve(&log);
    let url = format!("https://127.0.0.1:{port}");
    assert_eq!(wait_healthy(&url).await.status, "ok");

    let adm = |args: &[&str]| admin(tmp.path(), &dir, args);
    let created: serde_json::Value =
        serde_json::from_str(&ok(&run(adm(&["org", "add", "acme", "--json"])).await)).unwrap();
    let auth_secret = created["auth_secret"].as_str().unwrap().to_owned();
    let token: serde_json::Value =
        serde_json::from_str(&ok(&run(adm(&["org", "token", "acme", "--json"])).await)).unwrap();
    let reg_token = token["token"].as_str().unwrap().to_owned();

    let register = |home: &Path, secret: &str| {
        let f = home.with_extension("secret");
        std::fs::write(&f, secret).unwrap();
        let mut c = keysafe(tmp.path());
        c.args(["register", "--server", &url, "--org", "acme", "--auth-file"])
            .arg(&f)
            .arg("--home")
            .arg(home);
        c
    };
    let home_a = tmp.path().join("a");
    let home_b = tmp.path().join("b");
    ok(&run(register(&home_a, &auth_secret)).await);
    ok(&run(register(&home_b, &reg_token)).await);
    // A wrong secret too (a refused registration).
    let home_c = tmp.path().join("c");
    let o = run(register(&home_c, "wrong-secret-8d2f0b7c19")).await;
    assert!(!o.status.success());

    let payload_raw = "RAW-PAYLOAD-SECRET-3b9e51d07a";
    let payload_e2e = "E2E-PAYLOAD-SECRET-a41c6f2d95";
    let client = |home: &Path, args: &[&str]| {
        let mut c = keysafe(tmp.path());
        c.args(args).env("KEYSAFE_HOME", home);
        c
    };
    ok(&run_with_stdin(
        client(&home_a, &["put", "db/raw", "--raw"]),
        payload_raw.as_bytes().to_vec(),
    )
    .await);
    ok(&run_with_stdin(
        client(&home_a, &["put", "db/e2e"]),
        payload_e2e.as_bytes().to_vec(),
    )
    .await);
    let got = ok(&run(client(&home_a, &["get", "db/raw", "--no-cache"])).await);
    assert_eq!(got, payload_raw);
    let got = ok(&run(client(&home_a, &["get", "db/e2e", "--no-cache"])).await);
    assert_eq!(got, payload_e2e);
    ok(&run_with_stdin(
        client(&home_b, &["put", "b/k", "--raw"]),
        payload_raw.as_bytes().to_vec(),
    )
    .await);

    // The metrics, over the plain-HTTP listener.
    let metrics = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", mport))
            .await
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    };
    assert!(contains(&metrics, "keysafe_requests_total"));

    let key_before = ok(&run(adm(&["audit", "verify", "--json"])).await);
    let pk_before = anon_public_key(&url).await;
    child.signal("-TERM");
    let out = child.wait_with_output_async().await;
    assert!(out.status.success(), "serve exited with {:?}", out.status);
    assert!(serde_json::from_str::<serde_json::Value>(&key_before).unwrap()["broken"].is_null());

    // A restart loads the same signing key (unwrapped by the keyring) and continues the chain;
    // the shutdown signed the head.
    let restarted = serve(&log2);
    assert_eq!(wait_healthy(&url).await.status, "ok");
    assert_eq!(anon_public_key(&url).await, pk_before);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&run(adm(&["audit", "verify", "--json"])).await)).unwrap();
    assert!(v["broken"].is_null(), "{v}");
    assert!(v["signed_up_to"].as_u64().unwrap() > 10, "{v}");
    restarted.signal("-TERM");
    assert!(restarted.wait_with_output_async().await.status.success());

    let mut secrets = vec![
        auth_secret.clone(),
        reg_token.clone(),
        payload_raw.to_owned(),
        payload_e2e.to_owned(),
        "wrong-secret-8d2f0b7c19".to_owned(),
        passphrase.to_owned(),
    ];
    for home in [
        &home_a,
        &home_b,
        &dir.join(keysafe_cli::cmd::init::ADMIN_HOME),
    ] {
        if let Ok(t) = std::fs::read_to_string(home.join("token")) {
            secrets.push(t.trim().to_owned());
        }
    }
    // The sequenced tokens (COUNTER.RANDOM): the random part must never appear either.
    let tokens: Vec<String> = secrets
        .iter()
        .filter_map(|s| s.split_once('.').map(|(_, r)| r.to_owned()))
        .filter(|r| r.len() >= 20)
        .collect();
    assert!(!tokens.is_empty(), "no sequenced token found to search for");
    secrets.extend(tokens);

    let mut log_bytes = std::fs::read(&log).unwrap();
    log_bytes.extend(std::fs::read(&log2).unwrap());
    assert!(
        contains(&log_bytes, "TRACE"),
        "the log is not at trace level"
    );
    let file_sink = std::fs::read(dir.join("audit.jsonl")).unwrap();
    assert!(contains(
        &file_sink,
        "\"operation\":\"PUT /v1/deposits/{*path}\""
    ));
    let storage = keysafe_server::config::Config::load(&dir).unwrap().storage;
    let mut db = keysafe_store::testing::RawDb::connect(&storage)
        .await
        .unwrap();
    let rows = db
        .query(
            "SELECT json_array(seq, time, node, request_id, remote, client, org, operation, \
             target, version, outcome, prev_hash, hash) FROM audit_log",
            &[],
        )
        .await
        .unwrap();
    let db_entries = rows
        .iter()
        .map(|r| r[0].as_text().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(db_entries.contains("/v1/deposits/db/raw"));
    for s in &secrets {
        for (what, hay) in [
            ("the log", &log_bytes[..]),
            ("the audit file sink", &file_sink[..]),
            ("the audit table", db_entries.as_bytes()),
            ("the metrics", &metrics[..]),
        ] {
            assert!(
                !contains(hay, s),
                "a secret ({} chars) appears in {what}",
                s.len()
            );
        }
    }
}

// `audit verify`, the export and a tampered row, on SQLite and on PostgreSQL.
keysafe_testkit::storage_tests!(multi_thread: verify_export_and_the_documented_independent_check);
