//! Request and response bodies of the HTTP API (JSON). docs/api.md documents each endpoint.
//!
//! Every body is reachable here, at `api::Name`; each area keeps its bodies in its own file:
//! `secret` (the bearer secret in transit), `health`, `clients`, `orgs` (organisations and
//! registration tokens), `deposits`, `sharing` (ACLs, grants, shared deposits, recipients),
//! `groups`, and `keyring` (seals, keyring rotation, integrity, backups). The lifecycle bodies
//! (deletions and their dry runs, token listings and revocations, client pages) are defined in
//! [`crate::lifecycle`] and re-exported here.

pub use crate::lifecycle::*;

mod clients;
mod deposits;
mod groups;
mod health;
mod keyring;
mod orgs;
mod secret;
mod sharing;

pub use clients::*;
pub use deposits::*;
pub use groups::*;
pub use health::*;
pub use keyring::*;
pub use orgs::*;
pub use secret::*;
pub use sharing::*;
