//! The server's certificate reloads without a restart: a renewed certificate for the same key is
//! served to new connections while open ones carry on; a new key is refused unless allowed; a
//! broken pair keeps the old one; a CA-issued chain is served whole and verifies against the
//! CA; the expiry shows in health (a warning, never a failure) and in the metrics.

use keysafe_client::{KeysafeClient, ServerTrust};
use keysafe_proto::ClientFingerprint;
use keysafe_proto::identity::{
    SERVER_CERT_VALIDITY, generate_self_signed_for, inspect_certificate, reissue_self_signed,
};
use keysafe_server::tls::Reloaded;
use keysafe_testkit::TestServer;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

use keysafe_testkit::peek::{chain_of as presented, connect};

/// One HTTP/1.1 keep-alive request on an open connection; returns the status line.
async fn health_on(s: &mut TlsStream<tokio::net::TcpStream>) -> String {
    s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection was closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if buf.len() >= end + 4 + len {
                return text.lines().next().unwrap().to_owned();
            }
        }
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_and_open_ones_carry_on() {
    let ts = TestServer::start().await;
    let tls = ts.app.state.tls.clone();
    let mut open = connect(ts.addr).await;
    assert!(health_on(&mut open).await.starts_with("HTTP/1.1 200"));
    let before = presented(&open);
    let fp = ts.fingerprint.clone();

    // Renew for the same key with more names: the fingerprint stays.
    let key = std::fs::read_to_string(&ts.config.tls_key).unwrap();
    let renewed = reissue_self_signed(
        &key,
        "ks.example.com",
        &[
            "ks.example.com".into(),
            "127.0.0.1".into(),
            "10.1.2.3".into(),
        ],
        SERVER_CERT_VALIDITY,
    )
    .unwrap();
    std::fs::write(&ts.config.tls_cert, &renewed.cert_pem).unwrap();
    assert!(matches!(tls.reload().unwrap(), Reloaded::Renewed { .. }));
    assert_eq!(tls.reload().unwrap(), Reloaded::Unchanged);

    // The open connection was not dropped and keeps its certificate.
    assert!(health_on(&mut open).await.starts_with("HTTP/1.1 200"));
    assert_eq!(presented(&open), before);
    // A new one gets the renewed certificate; same key, same fingerprint.
    let fresh = connect(ts.addr).await;
    let now = presented(&fresh);
    assert_ne!(now, before);
    let info = inspect_certificate(&now[0]).unwrap();
    assert_eq!(
        info.subject_alt_names,
        ["ks.example.com", "127.0.0.1", "10.1.2.3"]
    );
    assert_eq!(info.fingerprint, fp);
    assert_eq!(ts.admin.server_fingerprint().await.unwrap(), fp);
    // Clients that pinned the key notice nothing.
    let c = ts.new_client("acme").await;
    c.client.whoami().await.unwrap();
    // The expiry is a metric.
    let text = keysafe_server::metrics::render(&ts.app.state).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("keysafe_tls_certificate_expiry_seconds "))
        .unwrap_or_else(|| panic!("{text}"));
    let v: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert_eq!(v as i64, info.not_after);
}

#[tokio::test]
async fn a_new_key_is_refused_unless_allowed_and_a_broken_pair_keeps_the_old_one() {
    let ts = TestServer::start().await;
    let tls = ts.app.state.tls.clone();
    let fp = ts.fingerprint.clone();
    let served = || async {
        inspect_certificate(&presented(&connect(ts.addr).await)[0])
            .unwrap()
            .fingerprint
    };

    // Half-written: a new certificate whose key is not there yet.
    let other =
        generate_self_signed_for("localhost", &["localhost".into()], SERVER_CERT_VALIDITY).unwrap();
    std::fs::write(&ts.config.tls_cert, &other.cert_pem).unwrap();
    let err = format!("{:#}", tls.reload().unwrap_err());
    assert!(err.contains("do not match"), "{err}");
    assert_eq!(served().await, fp);
    // Reported once per change: nothing changed since, so nothing is tried again.
    assert!(tls.reload_if_changed().is_none());

    // Both files new: a different fingerprint, refused.
    write_private(&ts.config.tls_key, &other.key_pem);
    let err = format!("{:#}", tls.reload_if_changed().unwrap().unwrap_err());
    assert!(
        err.contains("tls_allow_key_change") && err.contains(other.fingerprint.as_str()),
        "{err}"
    );
    assert_eq!(served().await, fp);
    assert_eq!(ts.admin.server_fingerprint().await.unwrap(), fp);
    assert_eq!(tls.fingerprint(), fp);

    // A key others can read is refused too.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ts.config.tls_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = format!("{:#}", tls.reload().unwrap_err());
    assert!(err.contains("chmod 600"), "{err}");

    // Allowed by the configuration: served, and the server says so everywhere.
    let ts = TestServer::start_with(|c| c.tls_allow_key_change = true).await;
    let tls = ts.app.state.tls.clone();
    let other =
        generate_self_signed_for("localhost", &["localhost".into()], SERVER_CERT_VALIDITY).unwrap();
    std::fs::write(&ts.config.tls_cert, &other.cert_pem).unwrap();
    write_private(&ts.config.tls_key, &other.key_pem);
    match tls.reload().unwrap() {
        Reloaded::NewKey { old, new, .. } => {
            assert_eq!(old, ts.fingerprint);
            assert_eq!(new, other.fingerprint);
        }
        other => panic!("{other:?}"),
    }
    let seen = inspect_certificate(&presented(&connect(ts.addr).await)[0]).unwrap();
    assert_eq!(seen.fingerprint, other.fingerprint);
    let anon = KeysafeClient::new(
        &ts.url,
        None,
        &ServerTrust::TrustOnFirstUse,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(anon.server_fingerprint().await.unwrap(), other.fingerprint);
    assert_eq!(anon.health().await.unwrap().fingerprint, other.fingerprint);
    // A client that pinned the old key refuses the server: re-pinning is the operator's job.
    let err = ts.admin.whoami().await.unwrap_err();
    assert!(
        matches!(err, keysafe_client::ClientError::FingerprintMismatch { .. }),
        "{err}"
    );
}

/// A throwaway PKI: root CA -> intermediate CA -> server certificate for 127.0.0.1.
struct Pki {
    root_der: CertificateDer<'static>,
    chain_pem: String,
    key_pem: String,
    fingerprint: ClientFingerprint,
}

fn pki(valid_for: Duration) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let ca_params = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let root =
        CertifiedIssuer::self_signed(ca_params("Test Root CA"), KeyPair::generate().unwrap())
            .unwrap();
    let inter = CertifiedIssuer::signed_by(
        ca_params("Test Intermediate CA"),
        KeyPair::generate().unwrap(),
        &root,
    )
    .unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::try_from(valid_for).unwrap();
    let cert = leaf.signed_by(&leaf_key, &inter).unwrap();
    Pki {
        root_der: root.der().clone(),
        chain_pem: format!("{}{}", cert.pem(), inter.pem()),
        key_pem: leaf_key.serialize_pem(),
        fingerprint: ClientFingerprint::of_certificate(cert.der()).unwrap(),
    }
}

#[tokio::test]
async fn a_ca_issued_chain_is_served_whole_and_health_warns_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(Duration::from_secs(10 * 86400));
    let (cert, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &p.chain_pem).unwrap();
    write_private(&key, &p.key_pem);
    let ts = TestServer::start_with(|c| {
        c.tls_cert = cert.clone();
        c.tls_key = key.clone();
    })
    .await;
    // Leaf and intermediate are presented; a client that trusts only the root verifies them.
    assert_eq!(presented(&connect(ts.addr).await).len(), 2);
    let ca = KeysafeClient::new(
        &ts.url,
        None,
        &ServerTrust::Ca(vec![p.root_der.clone()]),
        &Default::default(),
    )
    .unwrap();
    let h = ca.health().await.unwrap();
    assert_eq!(h.fingerprint, p.fingerprint);
    // Ten days left: ready, with a warning and the check saying why.
    assert_eq!(h.status, "ok");
    assert_eq!(h.checks["tls_certificate"], "expires_soon");
    assert_eq!(h.warnings.len(), 1, "{:?}", h.warnings);
    assert!(
        h.warnings[0].contains("expires in 9 days") || h.warnings[0].contains("expires in 10 days"),
        "{:?}",
        h.warnings
    );
    assert!(
        h.warnings[0].contains("have the CA issue a new one"),
        "{:?}",
        h.warnings
    );
    // A client that trusts another CA refuses it.
    let stranger = pki(Duration::from_secs(86400));
    let wrong = KeysafeClient::new(
        &ts.url,
        None,
        &ServerTrust::Ca(vec![stranger.root_der]),
        &Default::default(),
    )
    .unwrap();
    assert!(wrong.health().await.is_err());
}
