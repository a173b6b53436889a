//! Authentication (pseudo handshake, cookies, delegation tokens, doAs) and authorisation
//! (kms-acls.xml) through the wire, over a real keysafe server.

mod acls;
mod doas;
mod handshake;
mod tokens;

const AUTHZ: &str = "org.apache.hadoop.security.authorize.AuthorizationException";
