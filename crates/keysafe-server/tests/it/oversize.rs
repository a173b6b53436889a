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
