//! `keysafe kms`: the Hadoop KMS gateway, running as the registered client in `--home`.

use crate::cli::KmsArgs;
use crate::cmd::serve::shutdown_signal;
use crate::logging::{self, Format};
use anyhow::Context;
use keysafe_client::{ClientHome, KeysafeClient};
use keysafe_kms::{Gateway, KmsConfig};

pub async fn run(args: KmsArgs) -> anyhow::Result<()> {
    logging::init(Format::Text, "info");
    let dir = ClientHome::resolve_dir(args.home.as_deref())?;
    let home = ClientHome::load(&dir)?;
    let client = KeysafeClient::from_home(&home)?;
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
    // The default audit log lives in the client home.
    config.resolve_paths(&home.dir);
    if let Some(l) = args.listen {
        config.listen = l;
    }
    let me = client
        .whoami()
        .await
        .context("the gateway's client cannot reach keysafe or is not active")?;
    let tls = config
        .tls
        .as_ref()
        .map(keysafe_kms::server::tls_config)
        .transpose()?;
    let gw = Gateway::new(&home, client, &config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        url = %format!("{scheme}://{addr}/kms/v1/"),
        provider = %format!("kms://{scheme}@{}:{}/kms", addr.ip(), addr.port()),
        client = %me.fingerprint,
        org = %me.org,
        "keysafe KMS gateway is serving"
    );
    // systemd (Type=notify): ready once bound, watchdog pings, stopping at shutdown.
    crate::systemd::ready(&format!("serving {scheme}://{addr}/kms/v1/"));
    let watchdog = crate::systemd::spawn_watchdog();
    let stop = async {
        shutdown_signal().await;
        crate::systemd::stopping();
    };
    let r = keysafe_kms::server::serve(listener, gw, tls, stop).await;
    if let Some(w) = watchdog {
        w.abort();
    }
    r
}
