//! `keysafe serve`: run the HTTPS server until SIGTERM or SIGINT. An empty or missing data
//! directory is initialised first (and what was created is printed).

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
        })
        .await?;
        print_summary(&summary);
    }
    let mut config = Config::load(&dir)?;
    if let Some(l) = args.listen {
        config.listen = l;
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
    keysafe_server::run(listener, app, shutdown_signal()).await
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
