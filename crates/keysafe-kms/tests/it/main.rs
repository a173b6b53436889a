//! Integration tests: the gateway over a REAL keysafe server (TestServer, registered client,
//! real mutual TLS), driven over HTTP as Hadoop's client drives it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod auth;
mod certificates;
mod common;
mod hadoop;
mod hadoop_secure;
mod kdc;
mod kerberos;
mod limits;
mod reads;
mod safety;
