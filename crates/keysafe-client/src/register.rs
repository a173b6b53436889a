//! Registration: make (or reuse) the key pair in the client home, establish trust in the server
//! (a given fingerprint, a CA certificate, or trust on first use), register, and only then write
//! `client.toml` with the server pinned. A refused registration leaves no `client.toml`.

use crate::client::{ClientOptions, KeysafeClient};
use crate::error::ClientError;
use crate::home::{CONFIG_FILE, ClientHome, HomeConfig, load_ca};
use crate::tls::ServerTrust;
use keysafe_proto::api::{AuthSecret, ClientInfo, RegisterRequest};
use keysafe_proto::{ClientFingerprint, ClientName, OrgName};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct RegisterOptions {
    pub home: PathBuf,
    pub servers: Vec<String>,
    pub org: OrgName,
    pub auth_secret: Option<AuthSecret>,
    pub name: Option<ClientName>,
    /// Pin this server fingerprint instead of trusting the first one seen.
    pub server_fingerprint: Option<ClientFingerprint>,
    /// Verify the server against this CA certificate (PEM) instead of pinning.
    pub ca_cert: Option<PathBuf>,
}

/// What registration did.
#[derive(Debug, Clone)]
pub struct Registered {
    pub home: ClientHome,
    pub info: ClientInfo,
    /// The server fingerprint now pinned (when not using a CA).
    pub pinned: Option<ClientFingerprint>,
    /// True when the fingerprint was trusted on first use rather than given.
    pub trusted_on_first_use: bool,
}

pub async fn register(opts: RegisterOptions) -> Result<Registered, ClientError> {
    if opts.home.join(CONFIG_FILE).exists() {
        return Err(ClientError::Home(format!(
            "{} already holds a registered client; use another --home",
            opts.home.display()
        )));
    }
    let first = opts
        .servers
        .first()
        .ok_or_else(|| ClientError::Invalid("at least one --server is required".into()))?;
    let cn = opts
        .name
        .as_ref()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| "keysafe-client".into());
    let identity = ClientHome::ensure_identity(&opts.home, &cn)?;
    let (trust, tofu) = match (&opts.server_fingerprint, &opts.ca_cert) {
        (Some(_), Some(_)) => {
            return Err(ClientError::Invalid(
                "give either --server-fingerprint or --ca-cert, not both".into(),
            ));
        }
        (Some(fp), None) => (ServerTrust::Fingerprint(fp.clone()), false),
        (None, Some(ca)) => (ServerTrust::Ca(load_ca(ca)?), false),
        (None, None) => (ServerTrust::TrustOnFirstUse, true),
    };
    let client = KeysafeClient::new(first, Some(&identity), &trust, &ClientOptions::default())?;
    let pinned = match &trust {
        ServerTrust::Ca(_) => None,
        _ => {
            // The fingerprint the server states must be the key it used in the handshake.
            let stated = client.server_fingerprint().await?;
            let seen = client
                .observed_server_fingerprint()
                .ok_or_else(|| ClientError::Invalid("no server certificate was seen".into()))?;
            if stated != seen {
                return Err(ClientError::FingerprintMismatch {
                    expected: stated,
                    actual: seen,
                });
            }
            Some(seen)
        }
    };
    let info = client
        .register(&RegisterRequest {
            org: opts.org.clone(),
            auth_secret: opts.auth_secret,
            name: opts.name.clone(),
        })
        .await?;
    let home = ClientHome {
        dir: opts.home.clone(),
        config: HomeConfig {
            servers: opts.servers.clone(),
            server_fingerprint: pinned.clone(),
            ca_cert: opts.ca_cert.clone(),
            org: opts.org,
            fingerprint: identity.fingerprint.clone(),
            name: opts.name.map(|n| n.as_str().to_owned()),
        },
    };
    home.save()?;
    Ok(Registered {
        home,
        info,
        pinned,
        trusted_on_first_use: tofu,
    })
}
