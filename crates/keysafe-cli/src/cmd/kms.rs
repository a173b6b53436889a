//! `keysafe kms`: the Hadoop KMS gateway, running as the registered client in `--home`. SIGHUP
//! reopens the audit log and re-reads the TLS certificate and the ACL file; SIGINT and SIGTERM
//! stop it.

use crate::cli::KmsArgs;
use crate::cmd::serve::shutdown_signal;
use crate::logging::{self, Format};
use anyhow::Context;
use keysafe_client::ClientHome;
use keysafe_kms::config::LogFormat;
use keysafe_kms::{Gateway, KmsConfig};
use std::sync::Arc;

pub async fn run(args: KmsArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(p) => {
            let mut c = KmsConfig::load(p).map_err(|e| crate::exit::usage(format!("{e:#}")))?;
            // Paths in the file are relative to the file.
            let base = std::path::absolute(p)?
                .parent()
                .map(|d| d.to_path_buf())
                .unwrap_or_default();
            c.resolve_paths(&base);
            c
        }
        None => KmsConfig::default(),
    };
    logging::init(
        match config.log_format {
            LogFormat::Text => Format::Text,
            LogFormat::Json => Format::Json,
        },
        &config.log_level,
    );
    if let Some(l) = args.listen {
        config.listen = l;
    }
    config
        .check_listen(config.listen)
        .map_err(|e| crate::exit::usage(format!("{e:#}")))?;
    let dir = ClientHome::resolve_dir(args.home.as_deref())?;
    let home = ClientHome::load(&dir)?;
    let client = Gateway::client_for(&home)?;
    // The default audit log lives in the client home.
    config.resolve_paths(&home.dir);
    let me = client
        .whoami()
        .await
        .context("the gateway's client cannot reach keysafe or is not active")?;
    let gw = Gateway::new(&home, client, &config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    if let Some(maddr) = config.metrics_listen {
        match tokio::net::TcpListener::bind(maddr).await {
            Ok(ml) => {
                tracing::info!(url = %format!("http://{}/metrics", ml.local_addr()?), "gateway health and metrics are served");
                let gw = gw.clone();
                tokio::spawn(async move {
                    if let Err(e) =
                        keysafe_kms::metrics::serve(ml, gw, std::future::pending()).await
                    {
                        tracing::error!(error = %e, "the metrics listener failed");
                    }
                });
            }
            // The gateway serves without metrics rather than not at all, and says so.
            Err(e) => {
                tracing::error!(address = %maddr, error = %e, "cannot listen for metrics; serving without them")
            }
        }
    }
    spawn_reload_on_hangup(gw.clone());
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        url = %format!("{scheme}://{addr}/kms/v1/"),
        provider = %format!("kms://{scheme}@{}:{}/kms", addr.ip(), addr.port()),
        auth = ?config.auth.kind,
        client = %me.fingerprint,
        org = %me.org,
        group_recipient = gw.group_recipient.as_deref().unwrap_or(""),
        "keysafe KMS gateway is serving"
    );
    let watchdog = crate::systemd::spawn_watchdog();
    // systemd (Type=notify): ready once bound and the router built, watchdog pings, stopping at
    // shutdown. Start-up memory is handed back just before.
    let ready = move || {
        crate::memory::release_start_up_memory_and_log();
        crate::systemd::ready(&format!("serving {scheme}://{addr}/kms/v1/"));
    };
    let stop = async {
        shutdown_signal().await;
        crate::systemd::stopping();
    };
    let r = keysafe_kms::server::serve_with_ready(listener, gw, ready, stop).await;
    if let Some(w) = watchdog {
        w.abort();
    }
    r
}

/// SIGHUP: reopen the audit log, re-read the TLS certificate and the ACL file.
fn spawn_reload_on_hangup(gw: Arc<Gateway>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload by restarting");
            return;
        };
        while hup.recv().await.is_some() {
            crate::systemd::reloading();
            let errors = gw.reload();
            crate::systemd::ready("reloaded");
            if errors.is_empty() {
                tracing::info!(
                    "SIGHUP: reopened the audit log, re-read the TLS certificate and ACLs"
                );
            }
            for e in errors {
                tracing::error!(error = %e, "SIGHUP: reload failed; keeping what was in force");
            }
        }
    });
}
