//! The listener's protections: connections that never send, idle keep-alives, trickled
//! heads, the per-address cap, and request bodies read only after authentication, bounded in
//! size and time.

use crate::common::*;
use keysafe_kms::KmsConfig;
use reqwest::{Method, StatusCode};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tight_limits(c: &mut KmsConfig) {
    c.limits.first_request_timeout = Duration::from_millis(800);
    c.limits.idle_timeout = Duration::from_millis(800);
    c.limits.body_timeout = Duration::from_millis(800);
    c.limits.max_connections_per_address = 4;
    c.limits.max_body_bytes = 64 * 1024;
}

/// Reads until EOF (the server closed) or `within` passes; true if closed.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 4096];
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn listener_limits_close_idle_slow_and_excess_connections() {
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |c, _| tight_limits(c)).await;
    // A connection that never sends a request is closed after the first-request deadline.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await);
    // A keep-alive connection idle after a request is closed too.
    let mut ka = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    ka.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut ka, Duration::from_secs(10)).await);
    // Headers trickled a byte at a time are cut off.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let trickle = async {
        for b in b"GET /kms/v1/keys/names HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let cut = tokio::time::timeout(Duration::from_secs(10), trickle).await;
    assert!(
        matches!(cut, Ok(true)) || closed_within(&mut slow, Duration::from_secs(5)).await,
        "a trickled request head must be cut off"
    );

    // A request head larger than limits.max_header_bytes is refused (431) without a handler.
    let mut big = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "GET /kms/v1/keys/names HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let _ = big.write_all(head.as_bytes()).await;
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), big.read(&mut answer))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );

    // Per address: 4 held connections from 127.0.0.1; a fifth is closed at once, while
    // another address is served.
    let mut held = vec![];
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        // Keep them busy enough not to be idle: each sends a request every so often.
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    fifth
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "the fifth connection from one address is closed unanswered"
    );
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = other.connect(gw.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    drop(held);
}

#[tokio::test]
async fn request_bodies_are_read_only_after_authentication_and_bounded() {
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |c, _| tight_limits(c)).await;
    // Unauthenticated: 401 before the (huge, never sent) body.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /kms/v1/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Authenticated but declared too large: 413 without reading it.
    let mut alice = Caller::new("alice");
    alice.login(&gw.base).await;
    let cookie = alice.cookie.clone().unwrap();
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        format!("POST /kms/v1/keys HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{{")
            .as_bytes(),
    )
    .await
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"));
    // Too large without a length (chunked): 413 once the limit is passed.
    let big = format!(
        r#"{{"name":"k","description":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let r = alice
        .http
        .post(format!("{}/keys", gw.base))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            vec![Ok::<_, std::io::Error>(big)],
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A body that stops arriving: 408 after the body timeout.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        format!("POST /kms/v1/keys HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na")
            .as_bytes(),
    )
    .await
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Nothing was created by any of it.
    let r = alice.call(&gw, Method::GET, "/keys/names", None).await;
    assert_eq!(r.json(), serde_json::json!([]));
}
