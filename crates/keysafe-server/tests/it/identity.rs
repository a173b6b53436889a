//! Who may connect and what the TLS layer tells the application.

use crate::assert_code;
use keysafe_proto::api::ListQuery;
use keysafe_proto::{DepositName, ErrorCode};
use keysafe_testkit::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn fingerprint_and_health_need_no_certificate() {
    let ts = TestServer::start().await;
    let anon = ts.anonymous_client();
    assert_eq!(anon.server_fingerprint().await.unwrap(), ts.fingerprint);
    let h = anon.health().await.unwrap();
    assert_eq!(h.status, "ok");
    assert_eq!(h.fingerprint, ts.fingerprint);
    // The pinned verifier saw the same key the server states.
    assert_eq!(anon.observed_server_fingerprint().unwrap(), ts.fingerprint);
}

#[tokio::test]
async fn missing_certificate_gets_json_error_not_tls_alert() {
    let ts = TestServer::start().await;
    let anon = ts.anonymous_client();
    assert_code(
        anon.list(&ListQuery::default()).await,
        ErrorCode::ClientCertificateRequired,
    );
    assert_code(
        anon.get(&DepositName::parse("a").unwrap(), None).await,
        ErrorCode::ClientCertificateRequired,
    );
    assert_code(anon.list_orgs().await, ErrorCode::ClientCertificateRequired);
}

#[tokio::test]
async fn unregistered_certificate_is_unknown_client() {
    let ts = TestServer::start().await;
    let (_d, stranger) = ts.unregistered_client();
    assert_code(stranger.whoami().await, ErrorCode::UnknownClient);
    assert_code(
        stranger
            .put(
                &DepositName::parse("a").unwrap(),
                b"x".to_vec(),
                keysafe_client::Precondition::None,
            )
            .await,
        ErrorCode::UnknownClient,
    );
    assert_code(stranger.list_orgs().await, ErrorCode::UnknownClient);
}

#[tokio::test]
async fn wrong_pinned_fingerprint_refuses_to_talk() {
    let ts = TestServer::start().await;
    let wrong = keysafe_proto::ClientFingerprint::parse(&"ab".repeat(32)).unwrap();
    let c = keysafe_client::KeysafeClient::new(
        &ts.url,
        None,
        &keysafe_client::ServerTrust::Fingerprint(wrong.clone()),
        &Default::default(),
    )
    .unwrap();
    match c.health().await {
        Err(keysafe_client::ClientError::FingerprintMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, ts.fingerprint);
        }
        other => panic!("expected a fingerprint mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn plaintext_http_to_the_tls_port_is_not_served() {
    let ts = TestServer::start().await;
    let mut s = tokio::net::TcpStream::connect(ts.addr).await.unwrap();
    s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("the server must close the connection");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        !text.contains("HTTP/"),
        "plaintext HTTP got an HTTP answer: {text:?}"
    );
    assert!(
        !text.contains("\"status\""),
        "health leaked over plaintext: {text:?}"
    );
    // Whatever came back is at most a TLS alert record (content type 21).
    if let Some(first) = buf.first() {
        assert_eq!(*first, 21, "unexpected bytes: {buf:?}");
    }
}

#[tokio::test]
async fn server_certificate_names_host_and_ip() {
    let ts = TestServer::start().await;
    let pem = std::fs::read_to_string(&ts.summary.tls_cert).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(pem.as_bytes())?;
            c.wait_with_output()
        });
    let Ok(out) = out else {
        eprintln!("openssl not available; checked the fingerprint only");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DNS:localhost"), "{text}");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
}

/// Runs `openssl s_client` against the server; returns (success, combined output). `None` if
/// openssl is not installed (CI installs it).
async fn s_client(
    addr: std::net::SocketAddr,
    extra: &'static [&'static str],
) -> Option<(bool, String)> {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-brief", "-connect", &addr.to_string()])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some((out.status.success(), text))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn tls_1_3_preferred_1_2_accepted_older_refused() {
    let ts = TestServer::start().await;
    let Some((ok, text)) = s_client(ts.addr, &[]).await else {
        eprintln!("openssl not installed; skipping the protocol-version checks");
        return;
    };
    assert!(ok, "{text}");
    assert!(
        text.contains("TLSv1.3"),
        "default handshake is not TLS 1.3: {text}"
    );
    let (ok, text) = s_client(ts.addr, &["-tls1_2"]).await.unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("TLSv1.2"), "{text}");
    // Offer TLS 1.1 with every cipher the client library allows: the server must refuse.
    let (ok, text) = s_client(ts.addr, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"])
        .await
        .unwrap();
    assert!(!ok, "TLS 1.1 was accepted: {text}");
    assert!(!text.contains("Protocol version: TLSv1.1"), "{text}");
}

#[tokio::test]
async fn tls_1_3_minimum_is_configurable() {
    let ts = TestServer::start_with(|c| {
        c.tls_min_version = keysafe_server::config::TlsMinVersion::Tls13;
    })
    .await;
    let Some((ok, text)) = s_client(ts.addr, &["-tls1_2"]).await else {
        return;
    };
    assert!(!ok, "TLS 1.2 accepted although the minimum is 1.3: {text}");
}
