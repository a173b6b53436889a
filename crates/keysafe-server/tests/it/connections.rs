//! Connection limits: a peer without credentials cannot hold connections open by saying
//! nothing, by opening HTTP/2 and then nothing, by trickling a body, or by opening many
//! connections from one address. Timeouts here are set short in the configuration; every wait
//! has an upper bound only so that a broken server fails the test instead of hanging it.

use crate::raw::{Raw, parse_answer, read_to_close};
use keysafe_testkit::TestServer;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Long enough for any of the configured limits below to act many times over.
const GUARD: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_tls_connection_that_sends_nothing_is_closed() {
    let ts = TestServer::start_with(|c| {
        c.connection.first_byte_timeout = Duration::from_millis(500);
    })
    .await;
    let mut s = Raw::default().tls(ts.addr).await;
    let got = read_to_close(&mut s, GUARD)
        .await
        .expect("the server closes a connection that sent nothing after the handshake");
    assert!(got.is_empty(), "nothing is answered to nothing");
    // The server is still fine.
    assert_eq!(ts.anonymous_client().health().await.unwrap().status, "ok");
}

#[tokio::test]
async fn an_http2_preface_and_settings_then_nothing_is_closed() {
    let ts = TestServer::start_with(|c| {
        c.connection.idle_timeout = Duration::from_millis(500);
        // Long, so that the idle limit (not an unanswered ping) is what closes it.
        c.connection.http2_keep_alive_interval = Duration::from_secs(3600);
        c.connection.close_grace = Duration::from_millis(500);
    })
    .await;
    let mut s = Raw::h2().tls(ts.addr).await;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
    s.flush().await.unwrap();
    assert!(
        read_to_close(&mut s, GUARD).await.is_some(),
        "the server closes an HTTP/2 connection that opens no stream"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let ts = TestServer::start_with(|c| {
        c.connection.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let mut s = Raw::default().tls(ts.addr).await;
    s.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut s, GUARD)
        .await
        .expect("closed after the idle time");
    assert_eq!(parse_answer(&got).unwrap().status, 200);
}

#[tokio::test]
async fn a_trickled_body_is_cut_with_a_json_error() {
    let ts = TestServer::start_with(|c| {
        c.connection.body_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = Raw::default().tls(ts.addr).await;
    s.write_all(
        b"POST /v1/register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 200\r\n\r\n{",
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    // One byte every 2 s: far slower than the body read timeout allows.
    let (mut rd, mut wr) = tokio::io::split(s);
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if wr.write_all(b" ").await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let got = read_to_close(&mut rd, GUARD)
        .await
        .expect("the server ends a trickled request");
    trickle.abort();
    let a = parse_answer(&got).expect("an HTTP answer");
    assert_eq!(a.status, 408);
    assert_eq!(a.code().as_deref(), Some("request_timeout"));
}

#[tokio::test]
async fn a_slow_handler_gets_a_request_timeout() {
    // A whole request is bounded too: here a body that keeps arriving, just slowly enough to
    // pass the body read timeout but not the request timeout.
    let ts = TestServer::start_with(|c| {
        c.request_timeout = Duration::from_millis(800);
        c.connection.body_read_timeout = Duration::from_secs(30);
    })
    .await;
    let mut s = Raw::default().tls(ts.addr).await;
    s.write_all(
        b"POST /v1/register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 200\r\n\r\n{",
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = tokio::io::split(s);
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b" ").await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let got = read_to_close(&mut rd, GUARD).await.expect("ended");
    trickle.abort();
    let a = parse_answer(&got).expect("an HTTP answer");
    assert_eq!(a.status, 408);
    assert_eq!(a.code().as_deref(), Some("request_timeout"));
}

/// An attacker holding every connection its address may have (and trying for more) does not
/// keep a client at another address from being served.
#[tokio::test]
async fn one_address_at_its_maximum_leaves_room_for_others() {
    let ts = TestServer::start_with(|c| {
        c.max_connections = 8;
        c.max_connections_per_address = 4;
        // The attacker's connections are held open for the whole test.
        c.connection.first_byte_timeout = Duration::from_secs(3600);
    })
    .await;
    let client = ts.new_client("acme").await;
    let attacker = Raw::from("127.0.0.2");
    // The attacker tries for every slot there is; only its address's share is admitted, the
    // rest are closed at once (before any TLS).
    let mut held = Vec::new();
    for _ in 0..8 {
        if let Some(s) = attacker.try_tls(ts.addr).await {
            held.push(s);
        }
    }
    assert_eq!(
        held.len(),
        4,
        "the attacker holds its address's maximum, no more"
    );
    let attacker_ip = "127.0.0.2".parse().unwrap();
    assert_eq!(ts.app.state.connections.active_from(attacker_ip), 4);
    // Meanwhile a client from 127.0.0.1 is served, several times, on fresh connections too.
    for _ in 0..5 {
        let fresh = client.reopen();
        fresh.whoami().await.unwrap();
    }
    client.client.whoami().await.unwrap();
    drop(held);
}
