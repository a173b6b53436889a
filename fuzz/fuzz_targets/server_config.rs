//! The server's `keysafe.toml` (keysafe-server `config`): `Config::parse` and what the server
//! derives from an accepted file at start (the domain limits, the registration limiters, the
//! local URL, what a backup holds). The `Template` case writes the documented template with
//! the values `keysafe init` takes from its flags and parses it back. Properties: nothing
//! panics or overflows; a template either fails to parse or carries exactly the values given
//! (a value can never rewrite another setting).
#![no_main]

use arbitrary::Arbitrary;
use keysafe_server::config::{
    Config, SealConfig, SealTemplate, StorageTemplate, config_template_with_seal,
};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Arbitrary, Debug)]
enum Input {
    Text(String),
    Template {
        ip: std::net::IpAddr,
        port: u16,
        hostname: String,
        pkcs11: bool,
        module: String,
        token: String,
        key: String,
        pin_file: Option<String>,
        storage_url: Option<String>,
    },
}

fn derive(c: &Config) {
    let _ = c.limits();
    let _ = c.local_url();
    let _ = keysafe_server::RegistrationLimits::from_config(c);
    let _ = keysafe_server::backup::BackupSources::of(c);
}

fuzz_target!(|data: &[u8]| {
    let input = match keysafe_fuzz::raw_or::<Input>(data) {
        Ok(rest) => match std::str::from_utf8(rest) {
            Ok(t) => Input::Text(t.to_owned()),
            Err(_) => return,
        },
        Err(None) => return,
        Err(Some(i)) => i,
    };
    let dir = Path::new("/nonexistent/keysafe-fuzz-data");
    match input {
        Input::Text(text) => {
            if let Ok(c) = Config::parse(dir, &text) {
                derive(&c);
            }
        }
        Input::Template {
            ip,
            port,
            hostname,
            pkcs11,
            module,
            token,
            key,
            pin_file,
            storage_url,
        } => {
            let listen = SocketAddr::new(ip, port);
            let seal = SealTemplate {
                kind: if pkcs11 { "pkcs11" } else { "file" }.to_owned(),
                pkcs11_module: PathBuf::from(&module),
                pkcs11_token: token.clone(),
                pkcs11_key: key.clone(),
                pkcs11_pin_file: pin_file.as_ref().map(PathBuf::from),
                pkcs11_mode: "keyring".to_owned(),
                root_key_file: None,
            };
            let storage = match storage_url {
                Some(url) => StorageTemplate {
                    url,
                    password_file: None,
                },
                None => StorageTemplate::default(),
            };
            let text = config_template_with_seal(listen, &hostname, &seal, &storage);
            let Ok(c) = Config::parse(dir, &text) else {
                return;
            };
            derive(&c);
            assert_eq!(c.listen, listen);
            assert_eq!(c.hostname, hostname, "{text}");
            if let SealConfig::Pkcs11 {
                module: m,
                token: t,
                key_label: k,
                pin_file: p,
                ..
            } = &c.seal
            {
                assert!(pkcs11);
                assert_eq!(m, Path::new(&module), "{text}");
                assert_eq!(t, &token, "{text}");
                assert_eq!(k, &key, "{text}");
                let want = pin_file.map(|p| dir.join(p));
                assert_eq!(p.as_ref(), want.as_ref(), "{text}");
            } else {
                assert!(!pkcs11);
            }
        }
    }
});
