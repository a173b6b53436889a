//! `keysafe admin --data-dir DIR recover-admin`: the way back in when the last administrator is
//! locked out (a suspected clone, disabled, its home lost), instead of hand-written SQL.
//!
//! It works on the data directory, not over the API: whoever can read the data directory (its
//! configuration, the database credentials, the TLS certificate) can administer the server
//! anyway, so holding it is the proof. It takes the data directory's lock shared, as a server
//! does: it runs beside running servers (a change reaches their identity caches within
//! `identity_cache_ttl`) and never during a seal migration. It needs the seal (the root key
//! file, the passphrase as `unseal` takes it, or the HSM): the row it writes decides access, so
//! it is authenticated under a key only the open seal gives (ADR 0013), and without it the
//! command fails before it changes anything. Either it restores an existing client as an active administrator with
//! a cleared token (`--reset FP`), or it issues a new administrator identity into a new client
//! home (`--new-home DIR`). It refuses while an active administrator exists, unless `--force`.
//! The change is one audited write: the audit chain records it (operation
//! `OFFLINE recover-admin`, remote `local`).

use crate::cli::RecoverAdminArgs;
use crate::cmd::secrets;
use crate::exit::{Refused, usage};
use crate::output;
use anyhow::Context;
use keysafe_client::ClientHome;
use keysafe_client::home::HomeConfig;
use keysafe_core::audit::AuditScope;
use keysafe_core::clock::SystemClock;
use keysafe_core::error::CoreError;
use keysafe_core::fs::DataDirLock;
use keysafe_core::service::{ADMIN_ORG, Limits, Service};
use keysafe_proto::api::ClientInfo;
use keysafe_proto::audit::AuditEvent;
use keysafe_proto::{ClientFingerprint, ClientName, ErrorCode, OrgName, Timestamp};
use keysafe_server::config::{Config, SealConfig};
use keysafe_server::seal::{SealInputs, open_seal};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the recovery did, for `--json`.
#[derive(Debug, Serialize)]
struct Recovered {
    client: ClientInfo,
    /// The new client home (with `--new-home`).
    #[serde(skip_serializing_if = "Option::is_none")]
    home: Option<PathBuf>,
}

/// The audit event of the recovery: made here, as the middleware makes a request's.
fn event(config: &Config, target: &str) -> AuditEvent {
    let now = Timestamp::now();
    AuditEvent {
        time: now.unix_millis(),
        node: config.audit.node.clone(),
        request_id: format!("offline-{}-{}", now.unix_millis(), std::process::id()),
        remote: "local".into(),
        client: None,
        org: Some(ADMIN_ORG.into()),
        operation: "OFFLINE recover-admin".into(),
        target: format!("/offline/recover-admin/{target}"),
        version: None,
        outcome: "ok".into(),
    }
}

pub async fn run(dir: &Path, args: RecoverAdminArgs, json: bool) -> anyhow::Result<()> {
    let reset = args
        .target
        .reset
        .as_deref()
        .map(ClientFingerprint::parse)
        .transpose()
        .map_err(|e| usage(format!("--reset: {e}")))?;
    if let Some(home) = &args.target.new_home
        && home.exists()
    {
        return Err(usage(format!(
            "{} exists: give a new directory for the new administrator's home",
            home.display()
        )));
    }
    let name = ClientName::parse(&args.name).map_err(|e| usage(format!("--name: {e}")))?;
    let _lock = DataDirLock::shared(dir)?;
    let mut config = Config::load(dir)?;
    if let (SealConfig::Pkcs11 { pin_file, .. }, Some(f)) =
        (&mut config.seal, &args.secrets.pkcs11_pin_file)
    {
        *pin_file = Some(f.clone());
    }
    let store = keysafe_store::open(&config.storage)
        .await
        .with_context(|| format!("cannot open {}", config.storage))?;
    let passphrase = match config.seal {
        SealConfig::Passphrase => secrets::passphrase(
            args.secrets.passphrase_file.as_deref(),
            "keysafe passphrase: ",
            false,
        )?,
        _ => None,
    };
    let keks = store.load_keks().await?;
    let seal = open_seal(&config, &SealInputs { passphrase }, &keks)
        .await?
        .map_err(anyhow::Error::from)?
        .ok_or_else(|| {
            usage(
                "recover-admin writes an authenticated row and needs the seal: give the \
                 passphrase (--passphrase-file, KEYSAFE_PASSPHRASE, or the prompt on a terminal)",
            )
        })?;
    let service =
        Service::open(store, Some(seal), Arc::new(SystemClock), Limits::default()).await?;
    if service.is_sealed() {
        return Err(anyhow::anyhow!(
            "the seal does not open the keyring ({}): nothing was changed",
            service.sealed_reason().unwrap_or_default()
        ));
    }
    let active = service.active_admins().await?;
    if !active.is_empty() && !args.force {
        let names: Vec<String> = active
            .iter()
            .map(|a| format!("{} ({})", a.fingerprint, a.org))
            .collect();
        return Err(Refused {
            code: ErrorCode::InvalidState,
            message: format!(
                "an active administrator exists ({}): use it, or pass --force if its identity \
                 is lost",
                names.join(", ")
            ),
        }
        .into());
    }
    let recovered = match (reset, &args.target.new_home) {
        (Some(fp), _) => {
            let scope = AuditScope::new(event(&config, fp.as_str()));
            let info = scope
                .run(service.recover_admin(&fp))
                .await
                .map_err(|e| match e {
                    CoreError::NotFound(_) => anyhow::Error::new(Refused {
                        code: ErrorCode::NotFound,
                        message: format!("no client {fp} in this data directory's database"),
                    }),
                    other => other.into(),
                })?;
            Recovered {
                client: info,
                home: None,
            }
        }
        (None, Some(home)) => match new_admin(&config, &service, home, name).await {
            Ok(r) => r,
            Err(e) => {
                // The directory did not exist before: a half-made home is no use to anyone.
                let _ = std::fs::remove_dir_all(home);
                return Err(e);
            }
        },
        (None, None) => return Err(usage("pass --reset FINGERPRINT or --new-home DIR")),
    };
    service.store().close().await;
    if json {
        return output::json(&recovered);
    }
    match &recovered.home {
        Some(home) => {
            println!(
                "New administrator {} in {}.",
                recovered.client.fingerprint,
                home.display()
            );
            println!(
                "Use it: keysafe admin --home {} client list",
                home.display()
            );
        }
        None => {
            println!(
                "Client {} is an active administrator again; its token is cleared: the next \
                 request from its home is issued a fresh one.",
                recovered.client.fingerprint
            );
        }
    }
    println!(
        "Recorded in the audit trail. Running servers see the change within \
         identity_cache_ttl."
    );
    Ok(())
}

/// A new identity, registered directly as an active administrator of the administrators'
/// organisation, in a new client home that trusts the server's current certificate.
async fn new_admin(
    config: &Config,
    service: &Service,
    home_dir: &Path,
    name: ClientName,
) -> anyhow::Result<Recovered> {
    // The certificate the new home will pin, read before anything is registered.
    let certs = keysafe_client::home::load_ca(&config.tls_cert)?;
    let der = certs
        .first()
        .with_context(|| format!("no certificate in {}", config.tls_cert.display()))?;
    let server_fingerprint = ClientFingerprint::of_certificate(der)?;
    let identity = ClientHome::ensure_identity(home_dir, name.as_str())?;
    let age = keysafe_client::e2e::Identity::generate();
    age.write_new_file(&home_dir.join(keysafe_client::e2e::AGE_KEY_FILE))?;
    let scope = AuditScope::new(event(config, identity.fingerprint.as_str()));
    let (info, token) = scope
        .run(service.bootstrap_admin(
            &identity.fingerprint,
            &identity.cert,
            name.clone(),
            Some(age.recipient()),
        ))
        .await?;
    keysafe_client::token::TokenKeeper::in_home(home_dir).offer(&token.0)?;
    let home = ClientHome {
        dir: home_dir.to_owned(),
        config: HomeConfig {
            servers: vec![config.local_url()],
            server_fingerprint: Some(server_fingerprint),
            ca_cert: None,
            org: OrgName::parse(ADMIN_ORG)?,
            fingerprint: info.fingerprint.clone(),
            name: Some(name.to_string()),
            server_fingerprints: Default::default(),
            cache: None,
        },
    };
    home.save()?;
    Ok(Recovered {
        client: info,
        home: Some(home_dir.to_owned()),
    })
}
