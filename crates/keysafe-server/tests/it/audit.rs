//! The audit trail: every request recorded once, writes atomically with their entry, the chain
//! verified from outside (through the admin API, as `keysafe admin audit verify` does), each kind
//! of tampering on the stored rows detected at the right entry, the failure policy, sinks and
//! metrics.

use crate::assert_code;
use keysafe_client::{KeysafeClient, Precondition};
use keysafe_proto::audit::{AuditEntry, AuditReport, verify};
use keysafe_proto::{DepositName, ErrorCode};
use keysafe_store::testing::{RawDb, RawValue};
use keysafe_testkit::{TestServer, TestStorage};
use std::time::Duration;

fn name(s: &str) -> DepositName {
    DepositName::parse(s).unwrap()
}

/// Waits until every queued entry is in the chain.
async fn flush(ts: &TestServer) {
    ts.app.state.audit.flush(Duration::from_secs(30)).await;
}

async fn entries(admin: &KeysafeClient) -> Vec<AuditEntry> {
    admin.audit_entries(1, None, 10_000).await.unwrap().entries
}

/// Fetches everything through the admin API and verifies it here, with the published key.
async fn verify_remote(ts: &TestServer) -> AuditReport {
    let es = entries(&ts.admin).await;
    let cps = ts.admin.audit_checkpoints(0).await.unwrap().checkpoints;
    let pk = hex::decode(ts.admin.audit_public_key().await.unwrap().public_key).unwrap();
    verify(&es, &cps, &pk, None)
}

/// Traffic of every kind, flushed, then a signed checkpoint of the head. Returns the seq the
/// checkpoint covers.
async fn traffic(ts: &TestServer) -> u64 {
    let c = ts.new_client("acme").await;
    for i in 0..4 {
        c.client
            .put(&name(&format!("k{i}")), vec![i; 8], Precondition::None)
            .await
            .unwrap();
    }
    c.client.get(&name("k1"), None).await.unwrap();
    assert_code(c.client.get(&name("nope"), None).await, ErrorCode::NotFound);
    assert_code(
        ts.anonymous_client().whoami().await,
        ErrorCode::ClientCertificateRequired,
    );
    flush(ts).await;
    let cp = ts.admin.audit_checkpoint_now().await.unwrap().unwrap();
    flush(ts).await;
    cp.seq
}

async fn every_request_is_recorded_once_and_the_untouched_chain_verifies(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    let put = c
        .client
        .put(&name("db/key"), b"payload".to_vec(), Precondition::None)
        .await
        .unwrap();
    c.client.get(&name("db/key"), None).await.unwrap();
    assert_code(
        c.client.get(&name("missing"), None).await,
        ErrorCode::NotFound,
    );
    assert_code(
        ts.anonymous_client().whoami().await,
        ErrorCode::ClientCertificateRequired,
    );
    let (_d, stranger) = ts.unregistered_client();
    assert_code(stranger.whoami().await, ErrorCode::UnknownClient);
    flush(&ts).await;
    ts.admin.audit_checkpoint_now().await.unwrap().unwrap();
    flush(&ts).await;

    let es = entries(&ts.admin).await;
    // Exactly once: request ids are unique.
    let mut ids: Vec<_> = es.iter().map(|e| e.event.request_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), es.len(), "a request was recorded twice");
    let fp = c.fingerprint.as_str();
    let put_entry = es
        .iter()
        .find(|e| e.event.operation == "PUT /v1/deposits/{*path}")
        .expect("the put is recorded");
    assert_eq!(put_entry.event.client.as_deref(), Some(fp));
    assert_eq!(put_entry.event.org.as_deref(), Some("acme"));
    assert_eq!(put_entry.event.target, "/v1/deposits/db/key");
    assert_eq!(put_entry.event.version, Some(put.version.get()));
    assert_eq!(put_entry.event.outcome, "ok");
    assert!(put_entry.event.remote.starts_with("127.0.0.1:"));
    assert!(!put_entry.event.node.is_empty());
    let get_ok = es
        .iter()
        .find(|e| e.event.operation.starts_with("GET /v1/deposits/") && e.event.outcome == "ok")
        .expect("the get is recorded");
    assert_eq!(get_ok.event.version, Some(1));
    assert!(
        es.iter()
            .any(|e| e.event.target == "/v1/deposits/missing" && e.event.outcome == "not_found")
    );
    assert!(
        es.iter()
            .any(|e| e.event.client.is_none() && e.event.outcome == "client_certificate_required")
    );
    assert!(es.iter().any(|e| e.event.outcome == "unknown_client"));
    // The registration and the organisation it needed are there too.
    assert!(
        es.iter()
            .any(|e| e.event.operation == "POST /v1/register" && e.event.outcome == "ok")
    );
    assert!(
        es.iter()
            .any(|e| e.event.operation == "POST /v1/admin/orgs" && e.event.outcome == "ok")
    );

    let report = verify_remote(&ts).await;
    assert_eq!(report.broken, None, "{report:?}");
    assert!(report.signed_up_to.is_some());
    assert!(report.checkpoints >= 1);
}

async fn the_audit_log_holds_no_payload_token_or_secret(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let secret = ts.create_org("acme").await;
    let c = ts.register("acme", Some(secret.clone())).await.unwrap();
    let payload = b"TOP-SECRET-PAYLOAD-5c1e".to_vec();
    c.client
        .put(&name("p"), payload.clone(), Precondition::None)
        .await
        .unwrap();
    c.client.get(&name("p"), None).await.unwrap();
    let token = ts
        .admin
        .mint_registration_token(&keysafe_proto::OrgName::parse("acme").unwrap(), Some(600))
        .await
        .unwrap();
    flush(&ts).await;
    let dump = serde_json::to_string(&entries(&ts.admin).await).unwrap();
    assert!(!dump.contains("TOP-SECRET-PAYLOAD-5c1e"));
    assert!(!dump.contains(secret.expose()));
    assert!(!dump.contains(token.token.expose()));
    let seq_token = std::fs::read_to_string(c.home_dir().join("token")).unwrap_or_default();
    if !seq_token.trim().is_empty() {
        assert!(!dump.contains(seq_token.trim()));
    }
}

/// The kinds of tampering, each made directly on the stored rows, each found at its entry.
mod tampering {
    use super::*;

    async fn setup(storage: TestStorage) -> (TestServer, u64, RawDb) {
        let ts = TestServer::start_on(storage).await;
        let head = traffic(&ts).await;
        assert_eq!(verify_remote(&ts).await.broken, None);
        let db = ts.raw_db().await;
        (ts, head, db)
    }

    async fn exec(db: &mut RawDb, sql: &str) {
        db.execute_script(sql).await.unwrap();
    }

    async fn broken(ts: &TestServer) -> (u64, &'static str) {
        let b = verify_remote(ts)
            .await
            .broken
            .expect("tampering not detected");
        (b.seq, b.kind)
    }

    async fn an_edited_entry(storage: TestStorage) {
        let (ts, _, mut db) = setup(storage).await;
        exec(
            &mut db,
            "UPDATE audit_log SET outcome = 'forbidden', target = '/v1/forged' WHERE seq = 7",
        )
        .await;
        assert_eq!(broken(&ts).await, (7, "edited"));
    }

    async fn a_deleted_entry(storage: TestStorage) {
        let (ts, _, mut db) = setup(storage).await;
        exec(&mut db, "DELETE FROM audit_log WHERE seq = 6").await;
        assert_eq!(broken(&ts).await, (6, "deleted"));
    }

    async fn a_reordered_pair(storage: TestStorage) {
        let (ts, _, mut db) = setup(storage).await;
        exec(&mut db, "UPDATE audit_log SET seq = 1000000 WHERE seq = 5").await;
        exec(&mut db, "UPDATE audit_log SET seq = 5 WHERE seq = 6").await;
        exec(&mut db, "UPDATE audit_log SET seq = 6 WHERE seq = 1000000").await;
        assert_eq!(broken(&ts).await, (5, "reordered"));
    }

    async fn an_inserted_entry_even_one_chained_correctly(storage: TestStorage) {
        let (ts, _, mut db) = setup(storage).await;
        // On a live node, the shifted rows collide with the next entry the writer appends, so
        // the trail soon fails closed: take everything but the entries before tampering.
        let cps = ts.admin.audit_checkpoints(0).await.unwrap().checkpoints;
        let pk = hex::decode(ts.admin.audit_public_key().await.unwrap().public_key).unwrap();
        let mut ev = entries(&ts.admin).await[2].event.clone();
        flush(&ts).await;
        // Make room at 4 and forge an entry there that follows entry 3 correctly: an intruder
        // who knows the format and the hashes, but not the signing key.
        exec(
            &mut db,
            "UPDATE audit_log SET seq = seq + 1000000 WHERE seq >= 4",
        )
        .await;
        exec(
            &mut db,
            "UPDATE audit_log SET seq = seq - 999999 WHERE seq >= 1000000",
        )
        .await;
        let prev = db
            .scalar("SELECT hash FROM audit_log WHERE seq = 3", &[])
            .await
            .unwrap();
        let prev = prev.as_text().unwrap();
        ev.request_id = "forged".into();
        let forged = AuditEntry::chain(3, prev, ev);
        let text = |v: &Option<String>| match v {
            Some(t) => RawValue::from(t.as_str()),
            None => RawValue::Null,
        };
        db.execute(
            "INSERT INTO audit_log (seq, time, node, request_id, remote, client, org, operation, \
             target, version, outcome, prev_hash, hash) \
             VALUES (4, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            &[
                forged.event.time.into(),
                forged.event.node.as_str().into(),
                forged.event.request_id.as_str().into(),
                forged.event.remote.as_str().into(),
                text(&forged.event.client),
                text(&forged.event.org),
                forged.event.operation.as_str().into(),
                forged.event.target.as_str().into(),
                forged
                    .event
                    .version
                    .map_or(RawValue::Null, |v| (v as i64).into()),
                forged.event.outcome.as_str().into(),
                forged.prev_hash.as_str().into(),
                forged.hash.as_str().into(),
            ],
        )
        .await
        .unwrap();
        let b = verify(&entries(&ts.admin).await, &cps, &pk, None)
            .broken
            .unwrap();
        assert_eq!((b.seq, b.kind), (4, "inserted"));
    }

    async fn a_truncated_tail_past_the_last_checkpoint(storage: TestStorage) {
        let (ts, head, mut db) = setup(storage).await;
        // The live node notices too (its next append refuses to chain onto the cut log), so
        // take the key and the checkpoints first.
        let cps = ts.admin.audit_checkpoints(0).await.unwrap().checkpoints;
        let pk = hex::decode(ts.admin.audit_public_key().await.unwrap().public_key).unwrap();
        flush(&ts).await;
        let cut = head - 2;
        exec(
            &mut db,
            &format!("DELETE FROM audit_log WHERE seq >= {cut}"),
        )
        .await;
        let b = verify(&entries(&ts.admin).await, &cps, &pk, None)
            .broken
            .unwrap();
        assert_eq!((b.seq, b.kind), (cut, "truncated"));
        // The node refuses to go on with an altered chain: it fails closed, and says so.
        wait_audit_state(&ts, "failing").await;
        assert_code(ts.admin.list_orgs().await, ErrorCode::Unavailable);
    }

    async fn a_rewritten_chain_fails_its_signed_checkpoint(storage: TestStorage) {
        let (ts, head, mut db) = setup(storage).await;
        // Edit entry 5 and recompute every hash after it: the chain is consistent again, but
        // the signed head no longer matches.
        exec(
            &mut db,
            "UPDATE audit_log SET target = '/v1/forged' WHERE seq = 5",
        )
        .await;
        let es = entries(&ts.admin).await;
        let mut prev = es[3].hash.clone();
        for e in es.iter().filter(|e| e.seq >= 5) {
            let re = AuditEntry::chain(e.seq - 1, &prev, e.event.clone());
            db.execute(
                "UPDATE audit_log SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                &[
                    re.prev_hash.as_str().into(),
                    re.hash.as_str().into(),
                    (e.seq as i64).into(),
                ],
            )
            .await
            .unwrap();
            prev = re.hash;
        }
        assert_eq!(broken(&ts).await, (head, "checkpoint_mismatch"));
    }

    async fn a_forged_checkpoint(storage: TestStorage) {
        let (ts, head, mut db) = setup(storage).await;
        exec(
            &mut db,
            &format!("UPDATE audit_checkpoints SET signed_at = signed_at + 1 WHERE seq = {head}"),
        )
        .await;
        assert_eq!(broken(&ts).await, (head, "bad_signature"));
    }

    keysafe_testkit::storage_tests!(
        an_edited_entry,
        a_deleted_entry,
        a_reordered_pair,
        an_inserted_entry_even_one_chained_correctly,
        a_truncated_tail_past_the_last_checkpoint,
        a_rewritten_chain_fails_its_signed_checkpoint,
        a_forged_checkpoint,
    );
}

/// A trigger that makes every insert into the audit log fail: the audit store is broken.
async fn break_audit_store(ts: &TestServer) {
    ts.raw_db()
        .await
        .fail_inserts("audit_broken", "audit_log")
        .await
        .unwrap();
}

async fn repair_audit_store(ts: &TestServer) {
    ts.raw_db()
        .await
        .allow_inserts("audit_broken", "audit_log")
        .await
        .unwrap();
}

async fn wait_audit_state(ts: &TestServer, want: &str) {
    let anon = ts.anonymous_client();
    for _ in 0..600 {
        if anon
            .health()
            .await
            .unwrap()
            .checks
            .get("audit")
            .map(String::as_str)
            == Some(want)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the audit trail never became {want}");
}

async fn a_write_whose_audit_insert_fails_is_rolled_back_and_requests_fail_closed(
    storage: TestStorage,
) {
    let ts = TestServer::start_on(storage).await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("kept"), b"v1".to_vec(), Precondition::None)
        .await
        .unwrap();
    flush(&ts).await;
    break_audit_store(&ts).await;

    assert_code(
        c.client
            .put(&name("lost"), b"v".to_vec(), Precondition::None)
            .await,
        ErrorCode::Unavailable,
    );
    assert_code(
        c.client
            .put(&name("kept"), b"v2".to_vec(), Precondition::None)
            .await,
        ErrorCode::Unavailable,
    );
    let mut db = ts.raw_db().await;
    let n = db
        .scalar("SELECT COUNT(*) FROM deposits WHERE name = 'lost'", &[])
        .await
        .unwrap();
    assert_eq!(
        n.as_int(),
        Some(0),
        "the write was committed without its audit entry"
    );
    let v = db
        .scalar(
            "SELECT current_version FROM deposits WHERE name = 'kept'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(v.as_int(), Some(1));

    // The refusals' own entries cannot be appended: the trail reports itself failing, health
    // says so, and requests are refused rather than served unrecorded.
    wait_audit_state(&ts, "failing").await;
    let h = ts.anonymous_client().health().await.unwrap();
    assert_eq!(h.status, "audit_unavailable");
    assert_code(c.client.whoami().await, ErrorCode::Unavailable);

    // Repaired: the held entries go in (none was dropped), and service resumes.
    repair_audit_store(&ts).await;
    wait_audit_state(&ts, "ok").await;
    assert_eq!(
        c.client
            .get(&name("kept"), None)
            .await
            .unwrap()
            .version
            .get(),
        1
    );
    flush(&ts).await;
    let es = entries(&ts.admin).await;
    let refused_puts = es
        .iter()
        .filter(|e| {
            e.event.operation == "PUT /v1/deposits/{*path}" && e.event.outcome == "unavailable"
        })
        .count();
    assert_eq!(
        refused_puts, 2,
        "the refused writes are recorded once recovered"
    );
    assert_eq!(verify_remote(&ts).await.broken, None);
}

async fn insecure_continue_serves_reads_while_the_audit_store_fails(storage: TestStorage) {
    let ts = TestServer::start_on_with(storage, |c| {
        c.audit.on_failure = keysafe_server::config::AuditFailurePolicy::InsecureContinue
    })
    .await;
    let c = ts.new_client("acme").await;
    c.client
        .put(&name("k"), b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    flush(&ts).await;
    break_audit_store(&ts).await;
    // Writes still never happen without their entry.
    assert_code(
        c.client
            .put(&name("k"), b"w".to_vec(), Precondition::None)
            .await,
        ErrorCode::Unavailable,
    );
    wait_audit_state(&ts, "failing").await;
    assert_eq!(
        c.client.get(&name("k"), None).await.unwrap().version.get(),
        1
    );
    assert_eq!(ts.anonymous_client().health().await.unwrap().status, "ok");
    repair_audit_store(&ts).await;
    wait_audit_state(&ts, "ok").await;
}

async fn the_public_key_is_published_and_its_key_stored_wrapped(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    let k = ts.anonymous_client().audit_public_key().await.unwrap();
    assert_eq!(k.algorithm, "ed25519");
    assert_eq!(k.public_key.len(), 64);
    assert!(k.pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    // Stored wrapped by the keyring, never in the clear.
    let row = ts
        .raw_db()
        .await
        .query("SELECT kek_version, wrapped FROM audit_signing_keys", &[])
        .await
        .unwrap();
    assert_eq!(row.len(), 1);
    assert_eq!(row[0][0].as_int(), Some(1));
    assert!(row[0][1].as_blob().unwrap().len() > 32);
    // The key the server signs with is the published one.
    let signer = ts.service().audit_signer().await.unwrap();
    assert_eq!(hex::encode(signer.public_key()), k.public_key);
    // Ordinary clients cannot read the trail.
    let c = ts.new_client("acme").await;
    assert_code(
        c.client.audit_entries(1, None, 10).await,
        ErrorCode::Forbidden,
    );
}

#[tokio::test]
async fn sinks_get_every_entry_as_json_lines_and_rfc5424_syslog() {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let f2 = file.clone();
    let ts = TestServer::start_with(move |c| {
        c.audit.file = Some(f2);
        c.audit.file_max_size = 2048;
        c.audit.file_keep = 50;
        c.audit.syslog = Some((
            udp_addr.to_string(),
            keysafe_server::config::SyslogProtocol::Udp,
        ));
    })
    .await;
    traffic(&ts).await;
    let head = ts.service().store().audit_head().seq;
    // The syslog listener receives RFC 5424 messages.
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(30), udp.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let msg = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(
        msg.starts_with("<110>1 ") || msg.starts_with("<108>1 "),
        "{msg}"
    );
    let parts: Vec<&str> = msg.splitn(8, ' ').collect();
    assert_eq!(parts[3], "keysafe");
    assert_eq!(parts[5], "audit");
    let json: AuditEntry = serde_json::from_str(parts[7]).unwrap();
    assert_eq!(json.hash, json.computed_hash());
    // The file (with its rotations) ends up with every entry, in order.
    let mut lines = Vec::new();
    for _ in 0..600 {
        lines.clear();
        for i in (1..=50).rev() {
            if let Ok(t) = std::fs::read_to_string(format!("{}.{i}", file.display())) {
                lines.extend(t.lines().map(str::to_owned));
            }
        }
        if let Ok(t) = std::fs::read_to_string(&file) {
            lines.extend(t.lines().map(str::to_owned));
        }
        if lines
            .last()
            .and_then(|l| serde_json::from_str::<AuditEntry>(l).ok())
            .is_some_and(|e| e.seq >= head)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        std::path::Path::new(&format!("{}.1", file.display())).exists(),
        "the file never rotated"
    );
    let parsed: Vec<AuditEntry> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(parsed.last().unwrap().seq >= head);
    for w in parsed.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
}

#[tokio::test]
async fn syslog_over_tcp_uses_octet_counted_frames() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ts = TestServer::start_with(move |c| {
        c.audit.syslog = Some((
            addr.to_string(),
            keysafe_server::config::SyslogProtocol::Tcp,
        ));
    })
    .await;
    ts.anonymous_client().health().await.unwrap();
    let (mut sock, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .unwrap()
        .unwrap();
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((len, rest)) = text.split_once(' ')
            && let Ok(len) = len.parse::<usize>()
            && rest.len() >= len
        {
            let msg = &rest[..len];
            assert!(msg.starts_with('<') && msg.contains(">1 "), "{msg}");
            assert!(msg.contains("keysafe - audit - {"));
            break;
        }
    }
}

async fn metrics_expose_the_named_series_after_traffic(storage: TestStorage) {
    let ts = TestServer::start_on(storage).await;
    traffic(&ts).await;
    // A TLS handshake that fails.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(ts.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        use tokio::io::AsyncReadExt;
        let _ = s.read_to_end(&mut sink).await;
    }
    // Over the real metrics listener (plain HTTP).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(keysafe_server::metrics::serve(
        listener,
        ts.app.state.clone(),
        std::future::pending(),
    ));
    let text = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    for series in [
        "keysafe_requests_total{operation=\"PUT /v1/deposits/{*path}\",status=\"201\"}",
        "keysafe_requests_total{operation=\"GET /v1/deposits/{*path}\",status=\"404\"}",
        "keysafe_request_duration_seconds_bucket{operation=\"PUT /v1/deposits/{*path}\"",
        "keysafe_tls_handshake_failures_total{reason=\"error\"}",
        "keysafe_clients{state=\"active\"}",
        "keysafe_deposits ",
        "keysafe_sealed 0",
        "keysafe_audit_queue_depth ",
        "keysafe_audit_failures_total{reason=\"store\"}",
        "keysafe_db_pool_connections{state=\"idle\"}",
        "keysafe_identity_cache_hits_total ",
        "keysafe_identity_cache_misses_total ",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
}

// These run on SQLite and on PostgreSQL (the sinks do not depend on the storage).
keysafe_testkit::storage_tests!(
    every_request_is_recorded_once_and_the_untouched_chain_verifies,
    the_audit_log_holds_no_payload_token_or_secret,
    a_write_whose_audit_insert_fails_is_rolled_back_and_requests_fail_closed,
    insecure_continue_serves_reads_while_the_audit_store_fails,
    the_public_key_is_published_and_its_key_stored_wrapped,
    metrics_expose_the_named_series_after_traffic,
);
