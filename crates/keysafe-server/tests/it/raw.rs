//! Raw connections to the server for tests that must misbehave below HTTP: a TLS client (from a
//! chosen 127.0.0.0/8 source address, with or without a client certificate) that trusts any
//! server certificate (test-only; the server's identity is not what these tests check), and a
//! minimal HTTP/1.1 answer reader.

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

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
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a raw connection presents itself.
#[derive(Default)]
pub struct Raw {
    /// Source address (default: the kernel's choice, 127.0.0.1 for loopback).
    pub from: Option<IpAddr>,
    pub alpn: Vec<Vec<u8>>,
    pub identity: Option<keysafe_client::ClientIdentity>,
}

impl Raw {
    pub fn h2() -> Self {
        Self {
            alpn: vec![b"h2".to_vec()],
            ..Self::default()
        }
    }

    pub fn from(ip: &str) -> Self {
        Self {
            from: Some(ip.parse().unwrap()),
            ..Self::default()
        }
    }

    pub async fn tcp(&self, addr: SocketAddr) -> TcpStream {
        let sock = TcpSocket::new_v4().unwrap();
        if let Some(ip) = self.from {
            sock.bind(SocketAddr::new(ip, 0)).unwrap();
        }
        sock.connect(addr).await.unwrap()
    }

    /// TCP connect and a complete TLS handshake.
    pub async fn tls(&self, addr: SocketAddr) -> TlsStream<TcpStream> {
        self.try_tls(addr)
            .await
            .expect("the server completes the TLS handshake")
    }

    /// TCP connect and a TLS handshake; `None` when the server closes the connection instead.
    pub async fn try_tls(&self, addr: SocketAddr) -> Option<TlsStream<TcpStream>> {
        let tcp = self.tcp(addr).await;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
        let mut config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(vec![id.cert.clone()], id.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .ok()
    }
}

/// Reads until the server closes the connection (or errors), giving up after `limit` so that a
/// broken server fails the test instead of hanging it. `None`: still open after `limit`.
pub async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 16384];
    let work = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, work).await.ok().map(|_| all)
}

/// A parsed HTTP/1.1 answer: status, lower-case headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The stable error code of a JSON error body.
    pub fn code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["error"]["code"].as_str().map(str::to_owned)
    }
}

/// Parses the first answer in `bytes` (Content-Length or chunked bodies).
pub fn parse_answer(bytes: &[u8]) -> Option<Answer> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &bytes[end + 4..];
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if let Some(len) = find("content-length") {
        let len: usize = len.parse().ok()?;
        rest.get(..len)?.to_vec()
    } else if find("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut out = Vec::new();
        let mut r = rest;
        loop {
            let line_end = r.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&r[..line_end]).ok()?.trim(), 16).ok()?;
            r = &r[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(r.get(..size)?);
            r = &r[size + 2..];
        }
        out
    } else {
        rest.to_vec()
    };
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// Sends `request` on a fresh TLS connection and reads the answer until the server closes.
pub async fn exchange(addr: SocketAddr, raw: &Raw, request: &[u8]) -> Option<Vec<u8>> {
    let mut s = raw.tls(addr).await;
    if s.write_all(request).await.is_err() {
        return Some(Vec::new());
    }
    let _ = s.flush().await;
    read_to_close(&mut s, Duration::from_secs(60)).await
}
