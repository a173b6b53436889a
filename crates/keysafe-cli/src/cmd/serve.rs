//! `keysafe serve`: run the HTTPS server until SIGTERM or SIGINT. An empty or missing data
//! directory is initialised first (and what was created is printed). SIGHUP reloads the TLS
//! certificate and key (so does a change of the files, checked every
//! `server.tls_reload_interval`). Under systemd (`Type=notify`) it reports readiness once the
//! listener is bound and the store is open, pings the watchdog, and reports reloads and stops.

use crate::cli::ServeArgs;
use crate::cmd::init::{init_data_dir, print_summary};
use crate::logging::{self, Format};
use anyhow::Context;
use keysafe_server::config::{Config, DEFAULT_LISTEN, LogFormat, config_template};
use keysafe_server::init::{InitOptions, is_uninitialised};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.print_default_config {
        let listen = DEFAULT_LISTEN.parse()?;
        print!("{}", config_template(listen, "localhost"));
        return Ok(());
    }
    let dir = args
        .data_dir
        .ok_or_else(|| crate::exit::usage("--data-dir is required"))?;
    // From here on SIGHUP no longer ends the process (its default action): a SIGHUP that
    // arrives while the server starts is a reload once it serves.
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    if is_uninitialised(&dir) {
        let listen = match args.listen {
            Some(l) => l,
            None => DEFAULT_LISTEN.parse()?,
        };
        let summary = init_data_dir(&InitOptions {
            data_dir: dir.clone(),
            listen,
            hostname: args.hostname.clone(),
            passphrase: crate::cmd::secrets::init_passphrase(&args.seal)?,
            seal: crate::cmd::secrets::template(&args.seal),
            storage: Default::default(),
            join: false,
        })
        .await?;
        print_summary(&summary);
    }
    // Held (shared with other servers on this directory) until the process ends: an offline
    // command that changes what servers rely on (a seal migration) cannot run meanwhile, and
    // this server does not start while one runs.
    let _dir_lock = keysafe_core::fs::DataDirLock::shared(&dir)?;
    if dir.join(crate::cmd::admin::STAGED_SEAL_CONFIG).exists() {
        anyhow::bail!(
            "a seal migration of {} was interrupted: finish it by running the same `keysafe admin --data-dir {} seal migrate ...` again, or undo it with `seal migrate --rollback`",
            dir.display(),
            dir.display()
        );
    }
    let mut config = Config::load(&dir)?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(l) = args.metrics_listen {
        config.metrics_listen = Some(l);
    }
    logging::init(
        match config.log_format {
            LogFormat::Text => Format::Text,
            LogFormat::Json => Format::Json,
        },
        &config.log_level,
    );
    let passphrase = match config.seal {
        keysafe_server::config::SealConfig::Passphrase => crate::cmd::secrets::passphrase(
            args.seal.secrets.passphrase_file.as_deref(),
            "keysafe passphrase: ",
            false,
        )?,
        _ => None,
    };
    if let (keysafe_server::config::SealConfig::Pkcs11 { pin_file, .. }, Some(f)) =
        (&mut config.seal, &args.seal.secrets.pkcs11_pin_file)
    {
        *pin_file = Some(f.clone());
    }
    let app =
        keysafe_server::open_app_with(&config, &keysafe_server::seal::SealInputs { passphrase })
            .await?;
    if let Some(reason) = app.state.service.sealed_reason() {
        tracing::warn!(
            reason,
            "keysafe starts sealed: deposits answer 503 sealed until it is unsealed"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        url = %format!("https://{addr}"),
        fingerprint = %app.fingerprint(),
        "keysafe is serving"
    );
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    // A metrics address already taken does not stop the key server: it serves without metrics
    // and says so at error level (several processes on one host each need their own address).
    let metrics_listener = match config.metrics_listen {
        Some(maddr) => match tokio::net::TcpListener::bind(maddr).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(address = %maddr, error = %e, "cannot listen for metrics; serving without metrics (set metrics.listen or --metrics-listen)");
                None
            }
        },
        None => None,
    };
    if let Some(ml) = metrics_listener {
        tracing::info!(url = %format!("http://{}/metrics", ml.local_addr()?), "metrics are served");
        let state = app.state.clone();
        tokio::spawn(async move {
            let stopped = async {
                let _ = metrics_stopped.await;
            };
            if let Err(e) = keysafe_server::metrics::serve(ml, state, stopped).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
    let tls = app.state.tls.clone();
    let mut background = Vec::new();
    if !config.tls_reload_interval.is_zero() {
        background.push(tls.clone().spawn_watcher(config.tls_reload_interval));
    }
    #[cfg(unix)]
    match hup {
        Ok(hup) => background.push(tokio::spawn(reload_on_sighup(hup, tls))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the TLS certificate reloads only when its files change")
        }
    }
    background.extend(crate::systemd::spawn_watchdog());
    let ready = move || {
        crate::memory::release_start_up_memory_and_log();
        crate::systemd::ready(&format!("serving https://{addr}"));
    };
    let r = keysafe_server::run_with_ready(listener, app, ready, async {
        shutdown_signal().await;
        crate::systemd::stopping();
    })
    .await;
    for task in background {
        task.abort();
    }
    let _ = stop_metrics.send(());
    r
}

/// Reloads the TLS certificate and key on every SIGHUP (logrotate-style `systemctl reload`).
#[cfg(unix)]
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    tls: std::sync::Arc<keysafe_server::tls::ServerTls>,
) {
    while hup.recv().await.is_some() {
        crate::systemd::reloading();
        let tls = tls.clone();
        let _ = tokio::task::spawn_blocking(move || tls.reload_and_log("SIGHUP")).await;
        crate::systemd::ready("serving (reloaded)");
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
