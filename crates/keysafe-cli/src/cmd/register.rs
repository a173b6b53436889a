//! `keysafe register`: generate this host's key pair (or reuse one left by a failed attempt),
//! pin the server, and register into an organisation.

use crate::cli::RegisterArgs;
use crate::cmd::read_secret_file;
use crate::exit::usage;
use crate::output;
use keysafe_client::{ClientHome, RegisterOptions, register};
use keysafe_proto::api::{AuthSecret, ClientState};
use keysafe_proto::{ClientFingerprint, ClientName, OrgName};

pub async fn run(args: RegisterArgs) -> anyhow::Result<()> {
    let home = ClientHome::resolve_dir(args.client.home.as_deref())?;
    // An explicit --auth-file wins over KEYSAFE_AUTH from the environment.
    let auth_secret = match (&args.auth_file, &args.auth) {
        (Some(f), _) => Some(AuthSecret::new(read_secret_file(f)?.as_str())),
        (None, Some(s)) => Some(AuthSecret::new(s.clone())),
        (None, None) => None,
    };
    let org = OrgName::parse(&args.org).map_err(|e| usage(e.message().to_owned()))?;
    let name = args
        .name
        .as_deref()
        .map(ClientName::parse)
        .transpose()
        .map_err(|e| usage(e.message().to_owned()))?;
    let server_fingerprint = args
        .server_fingerprint
        .as_deref()
        .map(ClientFingerprint::parse)
        .transpose()
        .map_err(|e| usage(e.to_string()))?;
    let done = register(RegisterOptions {
        home,
        servers: args.servers,
        org,
        auth_secret,
        name,
        server_fingerprint,
        // Saved in client.toml, so make it absolute: later commands run from anywhere.
        ca_cert: args.ca_cert.map(|p| std::path::absolute(&p).unwrap_or(p)),
    })
    .await?;
    // Warnings go to stderr, so they show with --json too.
    if let Some(fp) = &done.pinned
        && done.trusted_on_first_use
    {
        eprintln!("Pinned the server fingerprint on first use: {fp}");
        // Asking the server itself (GET /?a=fingerprint) proves nothing: a man in the middle
        // answers with his own. The check must come from the server host.
        eprintln!(
            "Check it against what the server printed at `keysafe init` (\"Server fingerprint\"), or on the server host:"
        );
        eprintln!(
            "  {}    (DATA_DIR is /var/lib/keysafe for the Debian package)",
            pin_check_command("DATA_DIR/tls/server.crt")
        );
        eprintln!(
            "If they differ, someone is in the middle: delete {} and register again with --server-fingerprint.",
            done.home.dir.display()
        );
    }
    if let Some(fp) = &done.pinned {
        for url in &done.assumed_pins {
            eprintln!(
                "Could not reach {url} while registering; pinned it to the same key {fp} \
                 (servers restored from one backup share it). If it has its own key, set it \
                 under [server_fingerprints] in client.toml."
            );
        }
    }
    if done.info.state == ClientState::Pending {
        eprintln!(
            "The organisation requires approval: ask an administrator to run \
             `keysafe admin --data-dir DIR client approve {}`.",
            done.info.fingerprint
        );
    }
    if args.client.json {
        return output::json(&done.info);
    }
    println!("Registered into {} as {}", done.info.org, done.info.state);
    println!("Client fingerprint: {}", done.info.fingerprint);
    println!("Client home: {}", done.home.dir.display());
    Ok(())
}

/// The command that computes a server's fingerprint (SHA-256 of its certificate's public key)
/// from its certificate file, with nothing but OpenSSL.
pub fn pin_check_command(cert: &str) -> String {
    format!(
        "openssl x509 -in {cert} -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256"
    )
}
