//! Several servers: two real `keysafe serve` processes over one data directory (one SQLite file
//! in WAL mode, one TLS identity) on 127.0.0.2 and 127.0.0.3, and, for the retry rules,
//! misbehaving TLS endpoints that present the real server's key next to a real TestServer.

use crate::{
    fails_with, free_port, keysafe, ok, run, run_with_stdin, spawn_serve_at, wait_healthy,
};
use keysafe_client::client::{ClientOptions, FailoverOptions, ServerSpec};
use keysafe_client::{ClientError, KeysafeClient, Precondition, ServerTrust};
use keysafe_proto::{DepositName, ErrorCode};
use keysafe_testkit::TestServer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn client(home: &Path, tmp: &Path, args: &[&str]) -> std::process::Command {
    let mut c = keysafe(tmp);
    c.args(args).env("KEYSAFE_HOME", home);
    c
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

async fn register(tmp: &Path, secret_file: &Path, servers: &[&str], home: &Path) -> String {
    let mut c = keysafe(tmp);
    c.arg("register");
    for s in servers {
        c.args(["--server", s]);
    }
    c.args(["--org", "acme", "--auth-file"])
        .arg(secret_file)
        .arg("--home")
        .arg(home);
    let o = run(c).await;
    ok(&o);
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_over_one_data_dir_fail_over_when_the_first_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("data");
    let (pa, pb) = (free_port("127.0.0.2"), free_port("127.0.0.3"));
    let mut c = keysafe(t);
    c.args(["init", "--data-dir"])
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.2:{pa}")]);
    ok(&run(c).await);
    let (a, url_a) = spawn_serve_at(t, &dir, "127.0.0.2", pa);
    let (b, url_b) = spawn_serve_at(t, &dir, "127.0.0.3", pb);
    let fp = wait_healthy(&url_a).await.fingerprint;
    assert_eq!(wait_healthy(&url_b).await.fingerprint, fp);

    let mut c = keysafe(t);
    c.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["org", "add", "acme", "--json"]);
    let secret = json(&ok(&run(c).await))["auth_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_file = t.join("secret");
    std::fs::write(&secret_file, &secret).unwrap();

    // Both servers pinned on first use; they share one key, so one pin covers both.
    let home = t.join("home");
    let warn = register(t, &secret_file, &[&url_a, &url_b], &home).await;
    assert!(!warn.contains("Could not reach"), "{warn}");
    let toml = std::fs::read_to_string(home.join("client.toml")).unwrap();
    assert!(toml.contains(&url_a) && toml.contains(&url_b), "{toml}");
    assert!(toml.contains(fp.as_str()), "{toml}");
    assert!(!toml.contains("server_fingerprints"), "{toml}");

    // A second home registered while its second server is down: pinned to the same key, with
    // a warning that says so.
    let down = format!("https://127.0.0.4:{}", free_port("127.0.0.4"));
    let home2 = t.join("home2");
    let warn = register(t, &secret_file, &[&url_a, &down], &home2).await;
    assert!(
        warn.contains(&format!("Could not reach {down}")) && warn.contains(fp.as_str()),
        "{warn}"
    );

    ok(&run_with_stdin(client(&home, t, &["put", "db/key"]), b"one".to_vec()).await);
    let st = json(&ok(&run(client(&home, t, &["status", "--json"])).await));
    assert_eq!(st["using"], url_a.as_str(), "{st}");
    for (i, url) in [&url_a, &url_b].into_iter().enumerate() {
        assert_eq!(st["servers"][i]["url"], url.as_str());
        assert_eq!(st["servers"][i]["answers"], true, "{st}");
        assert_eq!(st["servers"][i]["health"], "ok", "{st}");
        assert_eq!(st["servers"][i]["fingerprint_matches"], true, "{st}");
    }
    let human = ok(&run(client(&home, t, &["status"])).await);
    assert!(human.contains(&format!("using        {url_a}")), "{human}");

    // The first server dies. A put (not idempotent) goes to the second: the connection to the
    // first was refused, so nothing reached it.
    a.kill();
    let out = ok(&run_with_stdin(client(&home, t, &["put", "db/key"]), b"two".to_vec()).await);
    assert!(out.contains("version 2"), "{out}");
    let got = run(client(&home, t, &["get", "db/key", "--no-cache"])).await;
    ok(&got);
    assert_eq!(got.stdout, b"two");
    let st = json(&ok(&run(client(&home, t, &["status", "--json"])).await));
    assert_eq!(st["servers"][0]["answers"], false, "{st}");
    assert!(st["servers"][0]["error"].as_str().unwrap().contains(&url_a));
    assert_eq!(st["servers"][1]["answers"], true, "{st}");
    assert_eq!(st["using"], url_b.as_str(), "{st}");
    // The home registered with a down second server uses its pin there too.
    let err = fails_with(&run(client(&home2, t, &["ls"])).await, 6);
    assert!(err.contains(&url_a) && err.contains(&down), "{err}");

    // Both down: the error names every server tried; status says no server answers.
    b.kill();
    let err = fails_with(
        &run(client(&home, t, &["get", "db/key", "--no-cache"])).await,
        6,
    );
    assert!(
        err.contains("no server could answer") && err.contains(&url_a) && err.contains(&url_b),
        "{err}"
    );
    let err = fails_with(
        &run_with_stdin(client(&home, t, &["put", "db/key"]), b"three".to_vec()).await,
        6,
    );
    assert!(err.contains(&url_a) && err.contains(&url_b), "{err}");
    let o = run(client(&home, t, &["status", "--json"])).await;
    assert_eq!(o.status.code(), Some(6));
    let st = json(&String::from_utf8_lossy(&o.stdout));
    assert!(st["using"].is_null(), "{st}");
}

/// How a fake endpoint misbehaves. It presents the real server's certificate, so the client's
/// pin accepts it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Misbehave {
    /// Accept TCP, then close before the TLS handshake: nothing can have been sent.
    CloseBeforeHandshake,
    /// Complete TLS, read the request head, then hang up without an answer.
    HangUpAfterRequest,
    /// Complete TLS, read the request head, answer 503 `unavailable`.
    Answer503,
}

struct Fake {
    url: String,
    /// Requests whose head was read.
    received: Arc<AtomicUsize>,
    /// TCP connections accepted.
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_server(ip: &str, tls_dir: &Path, mode: Misbehave) -> Fake {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = CertificateDer::pem_file_iter(tls_dir.join("server.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(tls_dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let accepted = Arc::new(AtomicUsize::new(0));
    let connections = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            connections.fetch_add(1, Ordering::SeqCst);
            if mode == Misbehave::CloseBeforeHandshake {
                drop(tcp);
                continue;
            }
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                if mode == Misbehave::Answer503 {
                    let body = r#"{"error":{"code":"unavailable","message":"fake outage"}}"#;
                    let resp = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
                // HangUpAfterRequest: dropping the stream closes the connection unanswered.
            });
        }
    });
    Fake {
        url,
        received,
        accepted,
        task,
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        use_cache: false,
        failover: FailoverOptions {
            retries: 2,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            reprobe_after: Duration::from_secs(30),
        },
        ..ClientOptions::default()
    }
}

/// A client of `tc`'s identity talking to `first`, then the real server.
fn two_server_client(ts: &TestServer, home: &Path, first: &str) -> KeysafeClient {
    let identity = keysafe_client::ClientHome::read_identity(home).unwrap();
    let pin = ServerTrust::Fingerprint(ts.fingerprint.clone());
    KeysafeClient::with_servers_and_home_token(
        &[
            ServerSpec {
                url: first.to_owned(),
                trust: pin.clone(),
            },
            ServerSpec {
                url: ts.url.clone(),
                trust: pin,
            },
        ],
        Some(&identity),
        &options(),
        home,
    )
    .unwrap()
}

fn tls_dir(ts: &TestServer) -> PathBuf {
    ts.data_dir.join("tls")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_may_have_reached_a_server_is_not_retried() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let name = DepositName::parse("db/key").unwrap();
    for mode in [Misbehave::HangUpAfterRequest, Misbehave::Answer503] {
        let fake = fake_server("127.0.0.2", &tls_dir(&ts), mode).await;
        let c = two_server_client(&ts, tc.home_dir(), &fake.url);
        let err = c
            .put(&name, b"v".to_vec(), Precondition::None)
            .await
            .unwrap_err();
        // Sent once to the first server, not repeated there, not sent to the second.
        assert_eq!(fake.received.load(Ordering::SeqCst), 1);
        assert!(err.to_string().contains(&fake.url), "{err}");
        assert!(!err.to_string().contains(&ts.url), "{err}");
        assert!(err.to_string().contains("not retried"), "{err}");
        let versions = tc.client.versions(&name).await.unwrap_err();
        assert_eq!(versions.code(), Some(ErrorCode::NotFound), "{versions}");
        if mode == Misbehave::Answer503 {
            assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
        } else {
            assert!(matches!(err.last(), ClientError::Connect { .. }), "{err:?}");
        }
        // A soft delete is not retried either (a fresh client: the first server is not yet
        // marked down).
        tc.client
            .put(&name, b"real".to_vec(), Precondition::None)
            .await
            .unwrap();
        let c = two_server_client(&ts, tc.home_dir(), &fake.url);
        c.delete(&name).await.unwrap_err();
        assert_eq!(fake.received.load(Ordering::SeqCst), 2);
        assert_eq!(tc.client.get(&name, None).await.unwrap().payload, "real");

        // A read is idempotent: it fails over to the real server.
        let c = two_server_client(&ts, tc.home_dir(), &fake.url);
        let got = c.get(&name, None).await.unwrap();
        assert_eq!(got.payload, "real");
        assert_eq!(fake.received.load(Ordering::SeqCst), 3);
        assert_eq!(c.base_url(), ts.url);
        // Sticky: the next read goes straight to the server that answered.
        c.get(&name, None).await.unwrap();
        assert_eq!(fake.received.load(Ordering::SeqCst), 3);
        tc.client.purge(&name).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_certainly_was_not_sent_fails_over() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let name = DepositName::parse("db/key").unwrap();
    // Nothing listens at all (connection refused).
    let refused = format!("https://127.0.0.2:{}", free_port("127.0.0.2"));
    let c = two_server_client(&ts, tc.home_dir(), &refused);
    let put = c
        .put(&name, b"one".to_vec(), Precondition::None)
        .await
        .unwrap();
    assert_eq!(put.version.get(), 1);
    // The connection is closed before the TLS handshake.
    let fake = fake_server("127.0.0.3", &tls_dir(&ts), Misbehave::CloseBeforeHandshake).await;
    let c = two_server_client(&ts, tc.home_dir(), &fake.url);
    let put = c
        .put(&name, b"two".to_vec(), Precondition::IfMatch(put.version))
        .await
        .unwrap();
    assert_eq!(put.version.get(), 2);
    assert_eq!(fake.received.load(Ordering::SeqCst), 0);
    // Exactly one version per put: nothing was applied twice.
    assert_eq!(tc.client.versions(&name).await.unwrap().versions.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_with_the_wrong_key_is_reported_not_skipped() {
    let ts = TestServer::start().await;
    let impostor = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let name = DepositName::parse("k").unwrap();
    tc.client
        .put(&name, b"v".to_vec(), Precondition::None)
        .await
        .unwrap();
    // The impostor presents another key than the one pinned for it.
    let c = two_server_client(&ts, tc.home_dir(), &impostor.url);
    let err = c.get(&name, None).await.unwrap_err();
    assert!(
        matches!(err, ClientError::FingerprintMismatch { .. }),
        "{err:?}"
    );
    let status = c.probe().await;
    assert_eq!(status[0].fingerprint_matches, Some(false));
    assert_eq!(status[1].fingerprint_matches, Some(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_command_starts_with_the_server_that_answered() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let fake = fake_server("127.0.0.2", &tls_dir(&ts), Misbehave::CloseBeforeHandshake).await;
    let home = tc.home_dir().to_owned();
    let toml_path = home.join("client.toml");
    let text = std::fs::read_to_string(&toml_path).unwrap();
    let quoted = format!("\"{}\"", ts.url);
    assert!(text.contains(&quoted), "{text}");
    std::fs::write(
        &toml_path,
        text.replace(&quoted, &format!("\"{}\", {quoted}", fake.url)),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let accepted = || fake.accepted.load(Ordering::SeqCst);

    // The first command meets the failing server first and fails over.
    ok(&run_with_stdin(client(&home, t, &["put", "a"]), b"v".to_vec()).await);
    assert_eq!(accepted(), 1);
    let state = home.join(keysafe_client::client::SERVER_STATE_FILE);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert!(saved["failed_at"][fake.url.as_str()].is_u64(), "{saved}");
    assert!(saved["failed_at"].get(ts.url.as_str()).is_none(), "{saved}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
    }
    // The next commands (new processes) go straight to the server that answered.
    let got = run(client(&home, t, &["get", "a", "--no-cache"])).await;
    assert_eq!(got.stdout, b"v");
    ok(&run(client(&home, t, &["ls"])).await);
    assert_eq!(accepted(), 1);
    // status probes every server.
    let st: serde_json::Value =
        serde_json::from_str(&ok(&run(client(&home, t, &["status", "--json"])).await)).unwrap();
    assert_eq!(accepted(), 2);
    assert_eq!(st["using"], ts.url.as_str(), "{st}");
    assert_eq!(st["servers"][0]["marked_down"], true, "{st}");

    // Once the failure is older than the re-probe interval, the first server is tried first
    // again (the failure time is moved back instead of waiting).
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let at = saved["failed_at"][fake.url.as_str()].as_u64().unwrap();
    saved["failed_at"][fake.url.as_str()] = (at - 60_000).into();
    std::fs::write(&state, serde_json::to_vec(&saved).unwrap()).unwrap();
    let got = run(client(&home, t, &["get", "a", "--no-cache"])).await;
    assert_eq!(got.stdout, b"v");
    assert_eq!(accepted(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_with_different_keys_are_each_pinned_on_first_use() {
    let ts = TestServer::start().await;
    let other = TestServer::start().await;
    assert_ne!(ts.fingerprint, other.fingerprint);
    let secret = ts.create_org("acme").await;
    let dir = tempfile::tempdir().unwrap();
    let done = keysafe_client::register(keysafe_client::RegisterOptions {
        home: dir.path().join("home"),
        servers: vec![ts.url.clone(), other.url.clone()],
        org: keysafe_proto::OrgName::parse("acme").unwrap(),
        auth_secret: Some(secret),
        name: None,
        server_fingerprint: None,
        ca_cert: None,
    })
    .await
    .unwrap();
    assert!(done.trusted_on_first_use && done.assumed_pins.is_empty());
    let home = keysafe_client::ClientHome::load(&done.home.dir).unwrap();
    assert_eq!(
        home.config.server_fingerprint.as_ref(),
        Some(&ts.fingerprint)
    );
    assert_eq!(
        home.config.server_fingerprints.get(&other.url),
        Some(&other.fingerprint)
    );
    assert_eq!(home.config.server_fingerprints.len(), 1);
    let c = KeysafeClient::from_home(&home).unwrap();
    let st = c.probe().await;
    assert!(
        st.iter().all(|s| s.fingerprint_matches == Some(true)),
        "{st:?}"
    );
    // Without the per-server entry the second server's key is refused.
    let mut shared_only = home.clone();
    shared_only.config.server_fingerprints.clear();
    let c = KeysafeClient::from_home(&shared_only).unwrap();
    let st = c.probe().await;
    assert_eq!(st[1].fingerprint_matches, Some(false), "{st:?}");
    assert!(!st[1].answers);
}
