//! Administrator routes: organisations and clients. Every handler requires an active client
//! whose role is `admin`, over the same mutual-TLS API as everything else.

pub mod clients;
pub mod cluster;
pub mod groups;
pub mod lifecycle;
pub mod orgs;
