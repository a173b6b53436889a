//! Integration tests of keysafe volumes over real FUSE mounts (`/dev/fuse`, `fusermount3`) and
//! the stock `gocryptfs` tool; they fail, never skip, when those are missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fio;
mod fsops;
mod interop;
mod support;
