//! A deposit over the size limit is reported by the client library as what it is, a 413 with
//! the server's JSON error, and never counts against the server's health.

use crate::assert_code;
use keysafe_client::Precondition;
use keysafe_proto::{DepositName, ErrorCode};
use keysafe_testkit::TestServer;

#[tokio::test]
async fn an_oversized_put_is_payload_too_large_not_an_outage() {
    let ts = TestServer::start_with(|c| c.max_deposit_size = 64 * 1024).await;
    let c = ts.new_client("acme").await;
    let name = DepositName::parse("big").unwrap();
    for size in [
        64 * 1024 + 1,
        1024 * 1024,
        8 * 1024 * 1024,
        64 * 1024 * 1024,
    ] {
        assert_code(
            c.client
                .put(&name, vec![1u8; size], Precondition::None)
                .await,
            ErrorCode::PayloadTooLarge,
        );
    }
    // The server is not marked down: the next request goes straight to it and succeeds.
    c.client
        .put(&name, vec![1u8; 1024], Precondition::None)
        .await
        .unwrap();
}

/// The mechanism behind it: the server answers 413 at once and then keeps reading (and
/// discarding) what the client still sends, so a client that writes its whole body before it
/// reads the answer gets the answer, not a broken pipe.
#[tokio::test]
async fn a_refused_body_is_drained_so_its_sender_reads_the_answer() {
    use crate::raw::{Raw, parse_answer, read_to_close};
    use tokio::io::AsyncWriteExt;
    let ts = TestServer::start_with(|c| c.max_deposit_size = 64 * 1024).await;
    let c = ts.new_client("acme").await;
    let raw = Raw {
        identity: Some(c.home.identity().unwrap()),
        ..Raw::default()
    };
    let size = 24 * 1024 * 1024;
    let mut s = raw.tls(ts.addr).await;
    let head = format!(
        "PUT /v1/deposits/big HTTP/1.1\r\nhost: x\r\nx-keysafe-token: {}\r\n\
         content-length: {size}\r\n\r\n",
        c.client.current_token().unwrap().as_str()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..size / chunk.len() {
        s.write_all(&chunk)
            .await
            .expect("the server keeps reading a body it refused");
    }
    s.flush().await.unwrap();
    let got = read_to_close(&mut s, std::time::Duration::from_secs(60))
        .await
        .expect("closed after the answer");
    let a = parse_answer(&got).expect("the 413 answer");
    assert_eq!(a.status, 413);
    assert_eq!(a.code().as_deref(), Some("payload_too_large"));
}
