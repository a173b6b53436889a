//! Registration: make (or reuse) the key pair in the client home, establish trust in the server
//! (a given fingerprint, a CA certificate, or trust on first use), register, and only then write
//! `client.toml` with the server pinned. A refused registration leaves no `client.toml`.

use crate::client::{ClientOptions, FailoverOptions, KeysafeClient, ServerSpec};
use crate::error::ClientError;
use crate::home::{CONFIG_FILE, ClientHome, HomeConfig, load_ca};
use crate::tls::ServerTrust;
use keysafe_proto::api::{AuthSecret, ClientInfo, RegisterRequest};
use keysafe_proto::{ClientFingerprint, ClientName, OrgName};
use std::collections::BTreeMap;
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
    /// Servers that could not be reached while registering on trust on first use: they are
    /// pinned to `pinned` (the key of the first server that answered) without having been seen.
    pub assumed_pins: Vec<String>,
}

pub async fn register(opts: RegisterOptions) -> Result<Registered, ClientError> {
    if opts.home.join(CONFIG_FILE).exists() {
        return Err(ClientError::Home(format!(
            "{} already holds a registered client; use another --home",
            opts.home.display()
        )));
    }
    if opts.servers.is_empty() {
        return Err(ClientError::Invalid(
            "at least one --server is required".into(),
        ));
    }
    let cn = opts
        .name
        .as_ref()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| "keysafe-client".into());
    let identity = ClientHome::ensure_identity(&opts.home, &cn)?;
    // The encryption identity (age X25519) lives next to the TLS key; its recipient goes to the
    // server so that deposits can be encrypted to this client. Reused if present.
    let age_path = opts.home.join(crate::e2e::AGE_KEY_FILE);
    let encryption = if age_path.exists() {
        crate::e2e::Identity::read_file(&age_path)?
    } else {
        let id = crate::e2e::Identity::generate();
        id.write_new_file(&age_path)?;
        id
    };
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
    // Establish the pin of every server before anything is sent with the client's identity.
    let probe_options = ClientOptions {
        failover: FailoverOptions {
            retries: 0,
            ..FailoverOptions::default()
        },
        ..ClientOptions::default()
    };
    let mut pins: Vec<Option<ClientFingerprint>> = Vec::with_capacity(opts.servers.len());
    let mut last_err = None;
    for url in &opts.servers {
        match &trust {
            ServerTrust::Ca(_) => pins.push(None),
            ServerTrust::Fingerprint(fp) => pins.push(Some(fp.clone())),
            ServerTrust::TrustOnFirstUse => {
                let client = KeysafeClient::new(url, Some(&identity), &trust, &probe_options)?;
                match pin_on_first_use(&client).await {
                    Ok(fp) => pins.push(Some(fp)),
                    // A server that is down now is pinned to the key of one that answered
                    // (servers restored from one backup share it); reported to the caller.
                    Err(e @ ClientError::Connect { .. }) => {
                        pins.push(None);
                        last_err = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let pinned = match &trust {
        ServerTrust::Ca(_) => None,
        _ => match pins.iter().flatten().next() {
            Some(fp) => Some(fp.clone()),
            None => {
                return Err(last_err.unwrap_or_else(|| {
                    ClientError::Invalid("no server certificate was seen".into())
                }));
            }
        },
    };
    let mut assumed = Vec::new();
    let mut server_fingerprints = BTreeMap::new();
    for (url, pin) in opts.servers.iter().zip(&pins) {
        match (pin, &pinned) {
            (None, Some(_)) => assumed.push(url.clone()),
            (Some(fp), Some(first)) if fp != first => {
                server_fingerprints.insert(url.clone(), fp.clone());
            }
            _ => {}
        }
    }
    let specs: Vec<ServerSpec> = opts
        .servers
        .iter()
        .zip(&pins)
        .map(|(url, pin)| ServerSpec {
            url: url.clone(),
            trust: match (pin, &pinned) {
                (Some(fp), _) | (None, Some(fp)) => ServerTrust::Fingerprint(fp.clone()),
                (None, None) => trust.clone(),
            },
        })
        .collect();
    let client = KeysafeClient::with_servers(
        &specs,
        Some(&identity),
        &ClientOptions {
            use_cache: false,
            ..ClientOptions::default()
        },
        None,
    )?;
    let info = client
        .register(&RegisterRequest {
            org: opts.org.clone(),
            auth_secret: opts.auth_secret,
            name: opts.name.clone(),
            recipient: Some(encryption.recipient()),
        })
        .await?;
    // The first sequenced token came with the answer; keep it in the home.
    match client.current_token() {
        Some(t) => crate::token::TokenKeeper::in_home(&opts.home).offer(&t)?,
        None => {
            return Err(ClientError::Unexpected {
                status: 201,
                detail: "the registration answer carried no sequenced token".into(),
            });
        }
    }
    let home = ClientHome {
        dir: opts.home.clone(),
        config: HomeConfig {
            servers: opts.servers.clone(),
            server_fingerprint: pinned.clone(),
            ca_cert: opts.ca_cert.clone(),
            org: opts.org,
            fingerprint: identity.fingerprint.clone(),
            name: opts.name.map(|n| n.as_str().to_owned()),
            server_fingerprints,
            cache: None,
        },
    };
    home.save()?;
    Ok(Registered {
        home,
        info,
        pinned,
        trusted_on_first_use: tofu,
        assumed_pins: assumed,
    })
}

/// Trust on first use: the fingerprint the server states must be the key it used in the
/// handshake.
async fn pin_on_first_use(client: &KeysafeClient) -> Result<ClientFingerprint, ClientError> {
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
    Ok(seen)
}
