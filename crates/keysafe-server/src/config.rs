//! Server configuration: `keysafe.toml` in the data directory, parsed once at start into a
//! validated [`Config`]. The documented template is the single source of the defaults.
//!
//! The parts: the raw TOML shape as serde reads it (`raw`), the typed values of single sections
//! (`sections`), the validated [`Config`] and its checks (`validated`), and the documented
//! template (`template`).

mod raw;
mod sections;
mod template;
mod validated;

pub use raw::{DEFAULT_LISTEN, DEFAULT_METRICS_LISTEN, DEFAULT_PKCS11_MODULE, DEFAULT_PORT};
pub use sections::{
    AnonymousSampling, AuditConfig, AuditFailurePolicy, BackupConfig, LogFormat, SealConfig,
    SyslogProtocol, TlsMinVersion,
};
pub use template::{
    SealTemplate, StorageTemplate, config_template, config_template_with_seal, seal_section,
};
pub use validated::{CONFIG_FILE, Config};

// These tests exercise the template and the parser together, so they sit here rather than in
// either part.
#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    /// Values `init` takes from its flags are written escaped: each reads back as given, and
    /// none can end its string and add a setting (`--hostname 'a" #'` used to leave the host
    /// name "a"; a module path with `\e` read back with an escape character in it). The
    /// inputs the fuzz target `server_config` found, and their relatives.
    #[test]
    fn template_values_read_back_exactly() {
        let dir = Path::new("/data");
        for (hostname, module, token, pin) in [
            ("a\" #", "/opt/hsm/lib.so", "keysafe", "hsm.pin"),
            ("h", "itsTTTT\\eitsTTT", "t", "p"),
            (
                "x\"\nlisten = \"0.0.0.0:1\"\n#",
                "C:\\hsm\\p11.dll",
                "tok\"en",
                "pin\\\"file",
            ),
            ("tab\there", "/m\u{1b}", "ctl\u{7f}", "nl\nfile"),
        ] {
            let seal = SealTemplate {
                kind: "pkcs11".into(),
                pkcs11_module: module.into(),
                pkcs11_token: token.into(),
                pkcs11_key: format!("{token}-key"),
                pkcs11_pin_file: Some(pin.into()),
                pkcs11_mode: "keyring".into(),
                root_key_file: None,
            };
            let listen = DEFAULT_LISTEN.parse().unwrap();
            let text =
                config_template_with_seal(listen, hostname, &seal, &StorageTemplate::default());
            let c = Config::parse(dir, &text).unwrap();
            assert_eq!(c.hostname, hostname);
            assert_eq!(c.listen, listen);
            let SealConfig::Pkcs11 {
                module: m,
                token: t,
                key_label: k,
                pin_file: p,
                ..
            } = &c.seal
            else {
                panic!("not the pkcs11 seal: {text}");
            };
            assert_eq!(m, Path::new(module));
            assert_eq!(t, token);
            assert_eq!(k, &format!("{token}-key"));
            assert_eq!(p.as_deref(), Some(dir.join(pin).as_path()));
        }
    }

    #[test]
    fn template_parses_to_defaults() {
        let dir = Path::new("/data");
        let text = config_template(DEFAULT_LISTEN.parse().unwrap(), "localhost");
        let c = Config::parse(dir, &text).unwrap();
        let d = Config::parse(dir, "").unwrap();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.tls_cert, Path::new("/data/tls/server.crt"));
        assert_eq!(c.max_deposit_size, d.max_deposit_size);
        assert_eq!(c.identity_cache_ttl, d.identity_cache_ttl);
        assert_eq!(c.handshake_timeout, d.handshake_timeout);
        assert_eq!(c.local_url(), "https://127.0.0.1:11371");
    }

    #[test]
    fn connection_limits_reach_the_connection_settings() {
        let dir = Path::new("/d");
        let c = Config::parse(
            dir,
            "[server]\nfirst_byte_timeout = \"3s\"\nidle_timeout = \"4s\"\n\
             body_read_timeout = \"5s\"\nrequest_timeout = \"6s\"\n\
             http2_keep_alive_interval = \"7s\"\nhttp2_keep_alive_timeout = \"8s\"\n\
             max_connections_per_address = 9\nshutdown_grace = \"10s\"",
        )
        .unwrap();
        assert_eq!(c.connection.first_byte_timeout, Duration::from_secs(3));
        assert_eq!(c.connection.idle_timeout, Duration::from_secs(4));
        assert_eq!(c.connection.body_read_timeout, Duration::from_secs(5));
        assert_eq!(c.request_timeout, Duration::from_secs(6));
        assert_eq!(
            c.connection.http2_keep_alive_interval,
            Duration::from_secs(7)
        );
        assert_eq!(
            c.connection.http2_keep_alive_timeout,
            Duration::from_secs(8)
        );
        assert_eq!(c.max_connections_per_address, 9);
        assert_eq!(c.connection.shutdown_grace, Duration::from_secs(10));
        // The template's values are the defaults.
        let t = Config::parse(
            dir,
            &config_template(DEFAULT_LISTEN.parse().unwrap(), "localhost"),
        )
        .unwrap();
        let d = Config::parse(dir, "").unwrap();
        assert_eq!(format!("{:?}", t.connection), format!("{:?}", d.connection));
        assert_eq!(t.request_timeout, d.request_timeout);
        assert_eq!(t.max_connections_per_address, d.max_connections_per_address);
        assert_eq!(t.audit.anonymous, d.audit.anonymous);
        assert_eq!(t.registration_pending_limit, d.registration_pending_limit);
        assert_eq!(t.registration_max_concurrent, d.registration_max_concurrent);
    }

    /// Every key in the template has a comment line directly above it (or above its block).
    #[test]
    fn every_template_key_is_documented() {
        for seal in ["file", "passphrase", "pkcs11"] {
            let t = config_template_with_seal(
                DEFAULT_LISTEN.parse().unwrap(),
                "localhost",
                &SealTemplate {
                    kind: seal.into(),
                    ..SealTemplate::default()
                },
                &StorageTemplate::default(),
            );
            let c = Config::parse(Path::new("/d"), &t).unwrap();
            assert_eq!(c.seal.kind(), seal);
            assert_eq!(c.storage.to_string(), "/d/keysafe.db");
            let lines: Vec<&str> = t.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                let l = l.trim();
                if l.is_empty() || l.starts_with('#') || l.starts_with('[') {
                    continue;
                }
                assert!(
                    i > 0 && lines[i - 1].trim_start().starts_with('#')
                        || lines[..i]
                            .iter()
                            .rev()
                            .take_while(|p| !p.trim().is_empty())
                            .any(|p| p.trim_start().starts_with('#')),
                    "undocumented key: {l}"
                );
            }
        }
    }
}
