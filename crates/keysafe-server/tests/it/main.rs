//! Integration tests: the real server on 127.0.0.1 with real TLS, a real SQLite file and real
//! registered clients (see keysafe-testkit).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod at_rest;
mod audit;
mod audit_sampling;
mod bodies;
mod conditional;
mod connections;
mod corpus;
mod deposits;
mod group_claims;
mod groups;
mod http;
mod hygiene;
mod identity;
mod integrity;
mod lifecycle;
mod observability;
mod openapi;
mod oversize;
mod raw;
mod registration;
mod registration_limits;
mod sealing;
mod sharing;
mod tls_reload;
mod tokens;

use keysafe_client::ClientError;
use keysafe_proto::ErrorCode;

/// Asserts that a call failed with this API error code (and its documented status).
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(r: Result<T, ClientError>, code: ErrorCode) {
    match r {
        Err(ClientError::Api {
            code: c, status, ..
        }) => {
            assert_eq!(c, code, "wrong error code");
            assert_eq!(status, code.http_status(), "wrong status for {code}");
        }
        other => panic!("expected API error {code}, got {other:?}"),
    }
}
