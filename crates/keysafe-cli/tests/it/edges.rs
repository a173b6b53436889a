//! The server's edges seen from outside, against a `keysafe serve` child process: an oversized
//! put is reported as what it is, and a huge registration body does not grow the server's
//! memory.

use crate::{fails_with, free_port, keysafe, ok, run, spawn_serve_at, wait_healthy};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client(home: &Path, tmp: &Path, args: &[&str]) -> std::process::Command {
    let mut c = keysafe(tmp);
    c.args(args).env("KEYSAFE_HOME", home);
    c
}

/// Initialises a data directory (with `edits` made to its configuration file: (from, to) text
/// replacements), serves it on 127.0.0.1, creates `acme` and registers a client home. Returns
/// the server, its URL and the client home.
pub async fn served(
    t: &Path,
    edits: &[(&str, &str)],
) -> (crate::Serve, String, std::path::PathBuf) {
    let dir = t.join("data");
    let port = free_port("127.0.0.1");
    let mut c = keysafe(t);
    c.args(["init", "--data-dir"])
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    ok(&run(c).await);
    let cfg = dir.join("keysafe.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from} not in the configuration");
        text = text.replace(from, to);
    }
    std::fs::write(&cfg, text).unwrap();
    let (serve, url) = spawn_serve_at(t, &dir, "127.0.0.1", port);
    wait_healthy(&url).await;
    let mut c = keysafe(t);
    c.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["org", "add", "acme", "--json"]);
    let created: serde_json::Value = serde_json::from_str(&ok(&run(c).await)).unwrap();
    let secret = t.join("secret");
    std::fs::write(&secret, created["auth_secret"].as_str().unwrap()).unwrap();
    let home = t.join("home");
    let mut c = keysafe(t);
    c.args(["register", "--server", &url, "--org", "acme", "--auth-file"])
        .arg(&secret)
        .arg("--home")
        .arg(&home);
    ok(&run(c).await);
    (serve, url, home)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_put_is_payload_too_large_not_cannot_reach() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (_serve, url, home) = served(
        t,
        &[("max_deposit_size = 1048576", "max_deposit_size = 65536")],
    )
    .await;
    for size in [65_537usize, 4 << 20, 64 << 20] {
        let file = t.join(format!("big-{size}"));
        std::fs::write(&file, vec![0x5au8; size]).unwrap();
        let o = run(client(&home, t, &["put", "big", file.to_str().unwrap()])).await;
        // A 4xx exit code (2: bad input), never 6 (cannot reach / unavailable).
        let err = fails_with(&o, 2);
        assert!(err.contains("payload_too_large"), "{size}: {err}");
        assert!(err.contains("413"), "{size}: {err}");
        assert!(!err.contains("cannot reach"), "{size}: {err}");
        // The server was not marked as failed.
        let state = std::fs::read_to_string(home.join("server-state.json")).unwrap_or_default();
        assert!(!state.contains(&url), "marked failed after a 413: {state}");
    }
    let small = t.join("small");
    std::fs::write(&small, b"fits").unwrap();
    ok(&run(client(&home, t, &["put", "big", small.to_str().unwrap()])).await);
}

// ---- memory under huge registration bodies ----

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Sends a registration whose body claims (or, chunked, streams) 100 MB; returns the status
/// line of the answer.
async fn huge_registration(addr: std::net::SocketAddr, chunked: bool) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let s = tls_connector()
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(s);
    let head = if chunked {
        "POST /v1/register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n"
            .to_owned()
    } else {
        format!(
            "POST /v1/register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            100 * 1024 * 1024
        )
    };
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..1600 {
            let r = if chunked {
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                wr.write_all(&framed).await
            } else {
                wr.write_all(&chunk).await
            };
            if r.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(120), rd.read_to_end(&mut answer)).await;
    writer.abort();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_registration_bodies_are_refused_without_growing_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (serve, url, _home) = served(t, &[]).await;
    let pid = serve.0.as_ref().unwrap().id();
    let addr: std::net::SocketAddr = url.trim_start_matches("https://").parse().unwrap();
    // Warm up the paths the attack uses (TLS, the register route, the JSON error).
    for _ in 0..4 {
        assert!(huge_registration(addr, false).await.contains("413"));
    }
    let before = rss_kib(pid);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Four declared and four chunked 100 MB bodies at once.
    let attacks: Vec<_> = (0..8)
        .map(|i| tokio::spawn(huge_registration(addr, i % 2 == 1)))
        .collect();
    for a in attacks {
        let status = a.await.unwrap();
        assert!(status.contains(" 413 "), "{status}");
    }
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let after = rss_kib(pid);
    assert!(
        peak.saturating_sub(before) < 16 * 1024,
        "the server grew from {before} KiB to a peak of {peak} KiB (after: {after} KiB)"
    );
    // It still serves.
    assert_eq!(wait_healthy(&url).await.status, "ok");
}
