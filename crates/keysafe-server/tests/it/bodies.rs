//! Request bodies are bounded per route before they are read: registration to a few KB, other
//! JSON to small limits, deposits to `max_deposit_size`. (That the server's memory does not grow
//! under a 100 MB registration body is measured on a `keysafe serve` process, in the CLI tests.)

use crate::raw::{Raw, exchange, parse_answer, read_to_close};
use keysafe_client::reqwest::Method;
use keysafe_proto::ErrorCode;
use keysafe_testkit::TestServer;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn a_huge_registration_is_refused_by_its_declared_length() {
    let ts = TestServer::start().await;
    let req = format!(
        "POST /v1/register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{{\"org\":\"",
        100 * 1024 * 1024
    );
    let got = exchange(ts.addr, &Raw::default(), req.as_bytes())
        .await
        .expect("answered");
    let a = parse_answer(&got).expect("an HTTP answer");
    assert_eq!(a.status, 413);
    assert_eq!(a.code().as_deref(), Some("payload_too_large"));
}

#[tokio::test]
async fn a_huge_chunked_registration_is_cut_at_the_limit() {
    let ts = TestServer::start().await;
    let mut s = Raw::default().tls(ts.addr).await;
    s.write_all(
        b"POST /v1/register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          transfer-encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = tokio::io::split(s);
    // Up to 100 MB in 64 KiB chunks, for as long as the server reads.
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        let head = format!("{:x}\r\n", chunk.len());
        for _ in 0..1600 {
            if wr.write_all(head.as_bytes()).await.is_err()
                || wr.write_all(&chunk).await.is_err()
                || wr.write_all(b"\r\n").await.is_err()
            {
                return false;
            }
        }
        true
    });
    let got = read_to_close(&mut rd, Duration::from_secs(120))
        .await
        .expect("answered and closed");
    let a = parse_answer(&got).expect("an HTTP answer");
    assert_eq!(a.status, 413);
    assert_eq!(a.code().as_deref(), Some("payload_too_large"));
    writer.abort();
}

#[tokio::test]
async fn json_routes_have_small_limits() {
    let ts = TestServer::start().await;
    let c = ts.new_client("acme").await;
    // 100 KB of JSON to routes that take a few hundred bytes.
    let big = format!(
        "{{\"name\":\"x\",\"contacts\":[\"{}\"]}}",
        "a".repeat(100_000)
    );
    for (who, method, path) in [
        (&ts.admin, Method::POST, "/v1/admin/orgs"),
        (&ts.admin, Method::POST, "/v1/admin/unseal"),
        (&ts.admin, Method::POST, "/v1/admin/backup"),
        (&c.client, Method::POST, "/v1/register"),
    ] {
        let r = who
            .raw_request(method.clone(), path)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 413, "{method} {path}");
        let body: keysafe_proto::ErrorBody = r.json().await.unwrap();
        assert_eq!(body.error.code, ErrorCode::PayloadTooLarge, "{path}");
    }
    // Nothing was created.
    assert!(
        !ts.admin
            .list_orgs()
            .await
            .unwrap()
            .orgs
            .iter()
            .any(|o| o.name.as_str() == "x")
    );
}

#[tokio::test]
async fn deposits_keep_their_configured_limit() {
    let ts = TestServer::start_with(|c| c.max_deposit_size = 200_000).await;
    let c = ts.new_client("acme").await;
    // Larger than every JSON limit, within the deposit limit.
    let r = c
        .client
        .raw_request(Method::PUT, "/v1/deposits/big")
        .body(vec![7u8; 150_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = c
        .client
        .raw_request(Method::PUT, "/v1/deposits/big")
        .body(vec![7u8; 250_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
}
