//! Kerberos/SPNEGO authentication as Hadoop's `KerberosAuthenticationHandler` does it: a request
//! without `Authorization: Negotiate` gets 401 `WWW-Authenticate: Negotiate`; a request with one
//! is accepted with the service keytab (GSSAPI through the system's MIT library), the client
//! principal is mapped to a short user name with Hadoop's `auth_to_local` rules, and the answer
//! carries the mutual-authentication token in `WWW-Authenticate: Negotiate <token>`. The
//! gateway then issues the `hadoop.auth` cookie (type `kerberos-dt`), so later requests skip the
//! negotiation. Each negotiation is one GSS context, disposed of at once (as Hadoop does).

pub mod gss;
pub mod names;

use crate::auth::{AuthRequest, AuthStep, HttpAuthenticator};
use crate::error::{KmsError, KmsResult};
use base64::Engine;
use libgssapi::context::{SecurityContext, ServerCtx};
use libgssapi::credential::Cred;
use names::NameRules;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The longest `Negotiate` token accepted (base64 text). Tickets with large authorization data
/// (Active Directory PACs) reach tens of KB; the request head limit caps it anyway.
const MAX_TOKEN_B64: usize = 48 * 1024;
/// GSS acceptances run on the blocking pool (the replay cache touches a file); at most this
/// many at once, so a flood of tokens cannot take every blocking thread.
const MAX_CONCURRENT_ACCEPTS: usize = 16;

pub struct SpnegoAuthenticator {
    cred: Cred,
    rules: Arc<NameRules>,
    permits: Arc<Semaphore>,
}

impl SpnegoAuthenticator {
    /// Acquires the acceptor credentials for `principal` (`*`: any principal of the keytab)
    /// from `keytab`. Fails at start if the keytab is missing or lacks the principal.
    pub fn new(principal: &str, keytab: &Path, rules: NameRules) -> anyhow::Result<Self> {
        if !keytab.is_file() {
            anyhow::bail!("the Kerberos keytab {} does not exist", keytab.display());
        }
        let name = (principal != "*").then_some(principal);
        let cred = gss::acquire(name, gss::Store::Keytab(keytab)).map_err(|e| {
            anyhow::anyhow!(
                "cannot use the keytab {} for {principal}: {e}",
                keytab.display()
            )
        })?;
        Ok(Self {
            cred,
            rules: Arc::new(rules),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_ACCEPTS)),
        })
    }
}

/// What one acceptance step gave.
enum Accepted {
    Done {
        principal: String,
        token: Option<Vec<u8>>,
    },
    Continue(Option<Vec<u8>>),
}

fn accept(cred: Cred, token: &[u8]) -> Result<Accepted, String> {
    let mut ctx = ServerCtx::new(Some(cred));
    let out = ctx.step(token, None).map_err(|e| e.to_string())?;
    let out = out.map(|b| b.to_vec());
    if !ctx.is_complete() {
        return Ok(Accepted::Continue(out));
    }
    let principal = ctx.source_name().map_err(|e| e.to_string())?.to_string();
    Ok(Accepted::Done {
        principal,
        token: out,
    })
}

fn negotiate_header(token: &[u8]) -> Option<(http::HeaderName, http::HeaderValue)> {
    let v = format!(
        "Negotiate {}",
        base64::engine::general_purpose::STANDARD.encode(token)
    );
    http::HeaderValue::from_str(&v)
        .ok()
        .map(|v| (http::header::WWW_AUTHENTICATE, v))
}

#[async_trait::async_trait]
impl HttpAuthenticator for SpnegoAuthenticator {
    fn token_type(&self) -> &'static str {
        "kerberos-dt"
    }
    fn challenge(&self) -> &'static str {
        "Negotiate"
    }
    async fn authenticate(&self, req: &AuthRequest<'_>) -> KmsResult<AuthStep> {
        let Some(auth) = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(AuthStep::None);
        };
        let Some(b64) = auth
            .strip_prefix("Negotiate")
            .filter(|r| r.is_empty() || r.starts_with(' '))
        else {
            // Another scheme (Basic, ...): as Hadoop, answer with the Negotiate challenge.
            return Ok(AuthStep::None);
        };
        let b64 = b64.trim();
        if b64.is_empty() || b64.len() > MAX_TOKEN_B64 {
            return Err(KmsError::authn("invalid SPNEGO token"));
        }
        let token = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| KmsError::authn("invalid SPNEGO token: not base64"))?;
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| KmsError::io("the gateway is shutting down"))?;
        let cred = self.cred.clone();
        let accepted = tokio::task::spawn_blocking(move || accept(cred, &token))
            .await
            .map_err(|_| KmsError::io("the Kerberos acceptor failed"))?;
        match accepted {
            Err(e) => {
                tracing::info!(error = %e, "SPNEGO negotiation refused");
                Err(KmsError::authn(format!("GSSException: {e}")))
            }
            Ok(Accepted::Continue(out)) => Ok(AuthStep::Continue {
                headers: out
                    .as_deref()
                    .and_then(negotiate_header)
                    .into_iter()
                    .collect(),
            }),
            Ok(Accepted::Done { principal, token }) => {
                let user = self.rules.short_name(&principal).map_err(|e| {
                    tracing::info!(%principal, error = %e, "no auth_to_local rule maps the principal");
                    KmsError::authn(format!("cannot map the principal {principal} to a user: {e}"))
                })?;
                Ok(AuthStep::User {
                    user,
                    principal: Some(principal),
                    headers: token
                        .as_deref()
                        .and_then(negotiate_header)
                        .into_iter()
                        .collect(),
                })
            }
        }
    }
}

/// The initiator side: builds `Authorization: Negotiate` tokens from tickets in a ticket cache
/// (`kinit -c FILE`). The gateway never uses it; tests and the benchmark drive SPNEGO with it,
/// and an operator can use it to probe a gateway.
pub struct SpnegoClient {
    cred: Cred,
}

impl SpnegoClient {
    pub fn from_ticket_cache(ccache: &Path) -> anyhow::Result<Self> {
        let cred = gss::acquire(None, gss::Store::TicketCache(ccache))
            .map_err(|e| anyhow::anyhow!("no usable tickets in {}: {e}", ccache.display()))?;
        Ok(Self { cred })
    }

    /// The first (and, with Kerberos, only) SPNEGO token for `service` (`HTTP/host@REALM`).
    pub fn token(&self, service: &str) -> anyhow::Result<String> {
        let target = libgssapi::name::Name::new(
            service.as_bytes(),
            Some(libgssapi::oid::GSS_NT_KRB5_PRINCIPAL),
        )
        .map_err(|e| anyhow::anyhow!("bad service principal {service}: {e}"))?;
        let mut ctx = libgssapi::context::ClientCtx::new(
            Some(self.cred.clone()),
            target,
            libgssapi::context::CtxFlags::GSS_C_MUTUAL_FLAG,
            Some(libgssapi::oid::GSS_MECH_SPNEGO),
        );
        let tok = ctx
            .step(None, None)
            .map_err(|e| anyhow::anyhow!("cannot start SPNEGO for {service}: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("GSSAPI produced no initial token"))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(&*tok))
    }
}
