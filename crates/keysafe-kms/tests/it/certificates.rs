//! `[auth] type = "certificate"`: real TLS on 127.0.0.1, a throwaway CA made here, client
//! certificates mapped to users by the configured rules. The stock Hadoop client with a
//! keystore is in `hadoop.rs`.

use crate::common::*;
use keysafe_kms::KmsConfig;
use keysafe_kms::certauth::CertField;
use keysafe_kms::config::{AuthType, CertificateRule, TlsConfig};
use reqwest::{Method, StatusCode};
use std::path::{Path, PathBuf};

/// A certificate authority for client certificates.
pub struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// A client certificate (PEM chain, PEM key) with `cn` and optional e-mail SAN.
    pub fn client(&self, cn: &str, email: Option<&str>) -> (String, String) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if let Some(e) = email {
            p.subject_alt_names
                .push(rcgen::SanType::Rfc822Name(e.try_into().unwrap()));
        }
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let p = dir.join("clients-ca.pem");
        std::fs::write(&p, &self.pem).unwrap();
        p
    }
}

/// HTTPS with the test server's certificate, certificate authentication with `ca`.
pub fn certificate_auth(c: &mut KmsConfig, dir: &Path, env: &Env, ca: &Ca) {
    c.tls = Some(TlsConfig {
        cert: env.server.config.tls_cert.clone(),
        key: env.server.config.tls_key.clone(),
    });
    c.auth.kind = AuthType::Certificate;
    c.auth.client_ca = Some(ca.write(dir));
    c.auth.certificate_rules = vec![
        CertificateRule {
            field: CertField::SanEmail,
            pattern: r"([a-z]+)@hadoop\.test".into(),
            user: "$1".into(),
        },
        CertificateRule {
            field: CertField::SubjectCn,
            pattern: "svc-([a-z]+)".into(),
            user: "$1".into(),
        },
    ];
}

fn client_with(identity: Option<(String, String)>) -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut b = reqwest::Client::builder().tls_danger_accept_invalid_certs(true);
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn get(h: &reqwest::Client, url: &str, cookie: Option<&str>) -> Result<Resp, String> {
    let mut rb = h.request(Method::GET, url);
    if let Some(c) = cookie {
        rb = rb.header("cookie", c);
    }
    let r = rb.send().await.map_err(|e| format!("{e:?}"))?;
    Ok(Resp {
        status: r.status(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    })
}

#[tokio::test]
async fn client_certificates_authenticate_and_map_to_users() {
    let env = Env::new().await;
    let ca = Ca::new("clients");
    let gw = env
        .gateway("127.0.0.1", |c, d| certificate_auth(c, d, &env, &ca))
        .await;
    let names = format!("{}/keys/names", gw.base);

    // alice's certificate: alice, whatever user.name claims; a cookie comes back.
    let alice = client_with(Some(ca.client("Alice Liddell", Some("alice@hadoop.test"))));
    let r = get(&alice, &format!("{names}?user.name=mallory"), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let cookie = set_cookie(&r.headers).unwrap();
    assert!(cookie.contains("u=alice&"), "{cookie}");
    // A service certificate by its common name.
    let hive = client_with(Some(ca.client("svc-hive", None)));
    assert_eq!(
        get(&hive, &names, None).await.unwrap().status,
        StatusCode::OK
    );

    // alice's cookie on bob's connection: the request is bob's (a cookie never outweighs the
    // certificate).
    let bob = client_with(Some(ca.client("bob", Some("bob@hadoop.test"))));
    let r = get(&bob, &names, Some(&cookie)).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(set_cookie(&r.headers).unwrap().contains("u=bob&"));

    // A certificate no rule maps: 403, audited as unauthenticated.
    let nobody = client_with(Some(ca.client("nobody", Some("nobody@elsewhere.test"))));
    let r = get(&nobody, &names, None).await.unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.exception().ends_with("AuthenticationException"));

    // No certificate, or one from another CA: the handshake fails, nothing is answered.
    let anon = client_with(None);
    assert!(get(&anon, &names, None).await.is_err());
    let rogue = Ca::new("clients");
    let forged = client_with(Some(rogue.client("Alice", Some("alice@hadoop.test"))));
    assert!(get(&forged, &names, None).await.is_err());

    gw.gw.audit.flush();
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(log.contains("OK[op=GET_KEYS, user=alice]"), "{log}");
    assert!(log.contains("OK[op=GET_KEYS, user=hive]"), "{log}");
    assert!(log.contains("OK[op=GET_KEYS, user=bob]"), "{log}");
    assert!(!log.contains("user=mallory"), "{log}");
    assert!(log.contains("UNAUTHENTICATED"), "{log}");
}

/// The client CA is re-read with the certificate: a CA removed on SIGHUP (`Gateway::reload`)
/// stops new connections from its clients, while a connection already open keeps working.
#[tokio::test]
async fn tls_reload_changes_new_connections_only() {
    let env = Env::new().await;
    let ca = Ca::new("clients");
    let other = Ca::new("other clients");
    let gw = env
        .gateway("127.0.0.1", |c, d| certificate_auth(c, d, &env, &ca))
        .await;
    let names = format!("{}/keys/names", gw.base);
    let alice = client_with(Some(ca.client("a", Some("alice@hadoop.test"))));
    assert_eq!(
        get(&alice, &names, None).await.unwrap().status,
        StatusCode::OK
    );
    // Replace the CA file and reload: the open keep-alive connection still serves ...
    std::fs::write(gw.dir.path().join("clients-ca.pem"), &other.pem).unwrap();
    assert!(gw.gw.reload().is_empty());
    assert_eq!(
        get(&alice, &names, None).await.unwrap().status,
        StatusCode::OK,
        "the open connection is not dropped"
    );
    // ... new connections need the new CA.
    let fresh = client_with(Some(ca.client("a", Some("alice@hadoop.test"))));
    assert!(get(&fresh, &names, None).await.is_err());
    let carol = client_with(Some(other.client("c", Some("carol@hadoop.test"))));
    assert_eq!(
        get(&carol, &names, None).await.unwrap().status,
        StatusCode::OK
    );
    // A broken file keeps what is in force.
    std::fs::write(gw.dir.path().join("clients-ca.pem"), "garbage").unwrap();
    let errors = gw.gw.reload();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let carol2 = client_with(Some(other.client("c", Some("carol@hadoop.test"))));
    assert_eq!(
        get(&carol2, &names, None).await.unwrap().status,
        StatusCode::OK
    );
}

/// The leaf certificate a TLS server at `addr` presents (accepting any certificate).
async fn served_certificate(addr: std::net::SocketAddr) -> Vec<u8> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    #[derive(Debug)]
    struct Any(std::sync::Mutex<Vec<u8>>);
    impl ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            *self.0.lock().unwrap() = end_entity.to_vec();
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let v = std::sync::Arc::new(Any(Default::default()));
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(v.clone())
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    v.0.lock().unwrap().clone()
}

fn self_signed_localhost() -> (String, String) {
    let k = rcgen::KeyPair::generate().unwrap();
    let p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    (p.self_signed(&k).unwrap().pem(), k.serialize_pem())
}

/// The server certificate is replaced on SIGHUP (`Gateway::reload`) and when its files change,
/// for new connections; an open keep-alive connection goes on working.
#[tokio::test]
async fn server_certificate_reload_on_sighup_and_on_file_change() {
    let env = Env::new().await;
    let (c1, k1) = self_signed_localhost();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("kms.crt"), dir.path().join("kms.key"));
    std::fs::write(&cert, &c1).unwrap();
    std::fs::write(&key, &k1).unwrap();
    let (cc, kk) = (cert.clone(), key.clone());
    let gw = env
        .gateway("127.0.0.1", |c, _| {
            c.tls = Some(TlsConfig { cert: cc, key: kk })
        })
        .await;
    let der = |pem: &str| {
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    };
    use rustls::pki_types::pem::PemObject;
    assert_eq!(served_certificate(gw.addr).await, der(&c1));
    let mut alice = Caller::new("alice");
    assert_eq!(
        alice
            .call(&gw, Method::GET, "/keys/names", None)
            .await
            .status,
        StatusCode::OK
    );

    // SIGHUP.
    let (c2, k2) = self_signed_localhost();
    std::fs::write(&cert, &c2).unwrap();
    std::fs::write(&key, &k2).unwrap();
    assert!(gw.gw.reload().is_empty());
    assert_eq!(served_certificate(gw.addr).await, der(&c2));
    assert_eq!(
        alice
            .call(&gw, Method::GET, "/keys/names", None)
            .await
            .status,
        StatusCode::OK,
        "the open connection still serves"
    );

    // A change on disk, noticed by the watcher.
    let (c3, k3) = self_signed_localhost();
    std::fs::write(&key, &k3).unwrap();
    std::fs::write(&cert, &c3).unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while served_certificate(gw.addr).await != der(&c3) {
        assert!(
            std::time::Instant::now() < until,
            "the new certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // A key that does not match the certificate is refused; the last good pair stays.
    std::fs::write(&key, &k1).unwrap();
    assert_eq!(gw.gw.reload().len(), 1);
    assert_eq!(served_certificate(gw.addr).await, der(&c3));
}
