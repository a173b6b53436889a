//! `gocryptfs.conf`: the JSON file at the root of a ciphertext directory that holds the volume's
//! 256-bit master key wrapped under a password (scrypt, then HKDF-SHA256, then AES-256-GCM with
//! a 128-bit IV), the scrypt parameters and the feature flags. We read and write exactly
//! gocryptfs's layout so the stock tool opens what keysafe writes and the other way round.
//!
//! Supported: the default format of gocryptfs 1.3 and later (`HKDF`, `GCMIV128`, `DirIV`,
//! `EMENames`, with or without `LongNames`, `Raw64` and `LongNameMax`). Anything else (plaintext
//! names, AES-SIV, XChaCha20-Poly1305, FIDO2, deterministic names, pre-HKDF volumes) is refused
//! with the flag named, never guessed at.

use super::content::{ContentCipher, FORMAT_VERSION};
use super::names::NameCipher;
use super::{FormatError, MasterKey, Password};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

pub const CONF_NAME: &str = "gocryptfs.conf";
/// scrypt cost of new volumes: gocryptfs's default (N = 2^16, 64 MiB).
pub const DEFAULT_SCRYPT_LOG_N: u8 = 16;
/// gocryptfs refuses less; so do we.
const MIN_SCRYPT_LOG_N: u32 = 10;
/// A hostile config must not make a mount allocate unbounded memory: 128 * r * N <= 1 GiB.
const MAX_SCRYPT_MEMORY: u64 = 1 << 30;
const KEY_LEN: usize = 32;
const MIN_SALT_LEN: usize = 32;

const HKDF_INFO_CONTENT: &[u8] = b"AES-GCM file content encryption";
const HKDF_INFO_EME: &[u8] = b"EME filename encryption";

/// The feature flags of a new volume, in the order gocryptfs writes them.
pub const DEFAULT_FLAGS: [&str; 6] = [
    "HKDF",
    "GCMIV128",
    "DirIV",
    "EMENames",
    "LongNames",
    "Raw64",
];
/// Flags this implementation understands.
const SUPPORTED_FLAGS: [&str; 7] = [
    "HKDF",
    "GCMIV128",
    "DirIV",
    "EMENames",
    "LongNames",
    "Raw64",
    "LongNameMax",
];
/// Flags a volume must have for us to open it.
const REQUIRED_FLAGS: [&str; 4] = ["HKDF", "GCMIV128", "DirIV", "EMENames"];
/// Flags gocryptfs knows that we do not support.
const KNOWN_UNSUPPORTED: [&str; 5] = [
    "PlaintextNames",
    "AESSIV",
    "FIDO2",
    "XChaCha20Poly1305",
    "DeterministicNames",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
struct ScryptJson {
    salt: String,
    #[serde(rename = "N")]
    n: u64,
    #[serde(rename = "R")]
    r: u32,
    #[serde(rename = "P")]
    p: u32,
    key_len: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfJson {
    creator: String,
    encrypted_key: String,
    scrypt_object: ScryptJson,
    version: u16,
    feature_flags: Vec<String>,
    #[serde(rename = "FIDO2", default, skip_serializing_if = "Option::is_none")]
    fido2: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "is_zero")]
    long_name_max: u8,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

/// A parsed and validated `gocryptfs.conf`.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    json: ConfJson,
    encrypted_key: Vec<u8>,
    salt: Vec<u8>,
    log_n: u8,
}

/// The two keys a mounted volume uses, derived from the master key with HKDF.
pub struct VolumeKeys {
    pub content: ContentCipher,
    pub names: NameCipher,
}

impl std::fmt::Debug for VolumeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeKeys([redacted])")
    }
}

fn hkdf(ikm: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>, FormatError> {
    use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
    struct Len;
    impl aws_lc_rs::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            KEY_LEN
        }
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    // No salt: HMAC pads an empty key with zeros, as Go's hkdf does for a nil salt.
    Salt::new(HKDF_SHA256, &[])
        .extract(ikm)
        .expand(&[info], Len)
        .and_then(|okm| okm.fill(&mut out[..]))
        .map_err(|_| FormatError::Crypto("HKDF failed".into()))?;
    Ok(out)
}

fn scrypt_key(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, FormatError> {
    let params = scrypt::Params::new(log_n, r, p, KEY_LEN)
        .map_err(|e| FormatError::Unsupported(format!("scrypt parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    scrypt::scrypt(password, salt, &params, &mut out[..])
        .map_err(|e| FormatError::Crypto(format!("scrypt: {e}")))?;
    Ok(out)
}

/// The cipher that wraps the master key: AES-GCM keyed by HKDF of the scrypt hash.
fn key_wrapper(password: &Password, cfg: &VolumeConfig) -> Result<ContentCipher, FormatError> {
    let s = &cfg.json.scrypt_object;
    let hash = scrypt_key(password.as_bytes(), &cfg.salt, cfg.log_n, s.r, s.p)?;
    Ok(ContentCipher::new(&*hkdf(&hash[..], HKDF_INFO_CONTENT)?))
}

impl VolumeConfig {
    /// Reads and validates `CIPHERDIR/gocryptfs.conf`.
    pub fn load(cipherdir: &Path) -> Result<Self, FormatError> {
        let path = cipherdir.join(CONF_NAME);
        let text = std::fs::read(&path).map_err(|e| {
            FormatError::Io(format!(
                "cannot read {} (is this a gocryptfs/keysafe volume?): {e}",
                path.display()
            ))
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &[u8]) -> Result<Self, FormatError> {
        let json: ConfJson = serde_json::from_slice(text)
            .map_err(|e| FormatError::Corrupt(format!("{CONF_NAME} is not valid: {e}")))?;
        if json.version != FORMAT_VERSION {
            return Err(FormatError::Unsupported(format!(
                "on-disk format version {} (only {FORMAT_VERSION} is supported)",
                json.version
            )));
        }
        for f in &json.feature_flags {
            if KNOWN_UNSUPPORTED.contains(&f.as_str()) {
                return Err(FormatError::Unsupported(format!(
                    "gocryptfs feature flag {f} (keysafe volumes support gocryptfs's default \
                     format: AES-GCM with encrypted names)"
                )));
            }
            if !SUPPORTED_FLAGS.contains(&f.as_str()) {
                return Err(FormatError::Unsupported(format!(
                    "unknown feature flag {f:?}"
                )));
            }
        }
        for f in REQUIRED_FLAGS {
            if !json.feature_flags.iter().any(|x| x == f) {
                return Err(FormatError::Unsupported(format!(
                    "the volume lacks the {f} feature flag (made by gocryptfs older than 1.3?)"
                )));
            }
        }
        let has_lnm = json.feature_flags.iter().any(|x| x == "LongNameMax");
        if has_lnm != (json.long_name_max != 0) {
            return Err(FormatError::Corrupt(
                "LongNameMax and its feature flag disagree".into(),
            ));
        }
        if json.fido2.is_some() {
            return Err(FormatError::Unsupported("FIDO2-protected volume".into()));
        }
        let s = &json.scrypt_object;
        if !s.n.is_power_of_two() || s.n < (1 << MIN_SCRYPT_LOG_N) {
            return Err(FormatError::Unsupported(format!(
                "scrypt N = {} (must be a power of two, at least 2^{MIN_SCRYPT_LOG_N})",
                s.n
            )));
        }
        let log_n = s.n.trailing_zeros();
        if s.r < 8 || s.p < 1 || s.p > 16 {
            return Err(FormatError::Unsupported(format!(
                "scrypt r = {}, p = {} (r >= 8, 1 <= p <= 16)",
                s.r, s.p
            )));
        }
        if 128u64.saturating_mul(u64::from(s.r)).saturating_mul(s.n) > MAX_SCRYPT_MEMORY {
            return Err(FormatError::Unsupported(
                "scrypt parameters need more than 1 GiB of memory".into(),
            ));
        }
        if s.key_len != KEY_LEN {
            return Err(FormatError::Unsupported(format!(
                "scrypt key length {}",
                s.key_len
            )));
        }
        let salt = STANDARD
            .decode(&s.salt)
            .map_err(|_| FormatError::Corrupt("the scrypt salt is not base64".into()))?;
        if salt.len() < MIN_SALT_LEN {
            return Err(FormatError::Unsupported(format!(
                "scrypt salt of {} bytes",
                salt.len()
            )));
        }
        let encrypted_key = STANDARD
            .decode(&json.encrypted_key)
            .map_err(|_| FormatError::Corrupt("EncryptedKey is not base64".into()))?;
        if encrypted_key.len() != KEY_LEN + 32 {
            return Err(FormatError::Corrupt(format!(
                "EncryptedKey of {} bytes",
                encrypted_key.len()
            )));
        }
        Ok(Self {
            log_n: u8::try_from(log_n).unwrap_or(u8::MAX),
            json,
            encrypted_key,
            salt,
        })
    }

    /// A new configuration (gocryptfs's defaults) with a fresh random master key wrapped under
    /// `password`.
    pub fn create(
        password: &Password,
        creator: &str,
        log_n: u8,
    ) -> Result<(Self, MasterKey), FormatError> {
        let mut master = MasterKey::default();
        super::random(&mut master.0[..])?;
        let mut cfg = Self {
            json: ConfJson {
                creator: creator.to_owned(),
                encrypted_key: String::new(),
                scrypt_object: ScryptJson {
                    salt: String::new(),
                    n: 1 << log_n,
                    r: 8,
                    p: 1,
                    key_len: KEY_LEN,
                },
                version: FORMAT_VERSION,
                feature_flags: DEFAULT_FLAGS.iter().map(|s| (*s).to_owned()).collect(),
                fido2: None,
                long_name_max: 0,
            },
            encrypted_key: Vec::new(),
            salt: Vec::new(),
            log_n,
        };
        cfg.wrap(&master, password, log_n)?;
        Ok((cfg, master))
    }

    /// Wraps `master` under `password` with a fresh salt (gocryptfs's `-passwd`).
    pub fn wrap(
        &mut self,
        master: &MasterKey,
        password: &Password,
        log_n: u8,
    ) -> Result<(), FormatError> {
        let mut salt = vec![0u8; KEY_LEN];
        super::random(&mut salt)?;
        self.salt = salt;
        self.log_n = log_n;
        self.json.scrypt_object = ScryptJson {
            salt: STANDARD.encode(&self.salt),
            n: 1 << log_n,
            r: 8,
            p: 1,
            key_len: KEY_LEN,
        };
        let wrapper = key_wrapper(password, self)?;
        let mut out = Vec::with_capacity(KEY_LEN + 32);
        wrapper.encrypt_block(&master.0[..], 0, None, &mut out)?;
        self.json.encrypted_key = STANDARD.encode(&out);
        self.encrypted_key = out;
        Ok(())
    }

    /// Unwraps the master key. A wrong password is [`FormatError::WrongPassword`].
    pub fn unlock(&self, password: &Password) -> Result<MasterKey, FormatError> {
        let wrapper = key_wrapper(password, self)?;
        let mut plain = Zeroizing::new(Vec::with_capacity(KEY_LEN));
        wrapper
            .decrypt_block(&self.encrypted_key, 0, None, &mut plain)
            .map_err(|_| FormatError::WrongPassword)?;
        if plain.len() != KEY_LEN {
            return Err(FormatError::Corrupt(
                "the master key has a bad length".into(),
            ));
        }
        let mut master = MasterKey::default();
        master.0.copy_from_slice(&plain);
        Ok(master)
    }

    fn has(&self, flag: &str) -> bool {
        self.json.feature_flags.iter().any(|f| f == flag)
    }

    pub fn feature_flags(&self) -> &[String] {
        &self.json.feature_flags
    }

    pub fn creator(&self) -> &str {
        &self.json.creator
    }

    pub fn scrypt_log_n(&self) -> u8 {
        self.log_n
    }

    /// The content and name keys of a volume with this configuration.
    pub fn keys(&self, master: &MasterKey) -> Result<VolumeKeys, FormatError> {
        let content = hkdf(&master.0[..], HKDF_INFO_CONTENT)?;
        let eme = hkdf(&master.0[..], HKDF_INFO_EME)?;
        let long_name_max = if !self.has("LongNames") {
            None
        } else if self.json.long_name_max != 0 {
            Some(usize::from(self.json.long_name_max))
        } else {
            Some(super::names::NAME_MAX)
        };
        Ok(VolumeKeys {
            content: ContentCipher::new(&content),
            names: NameCipher::new(&eme, self.has("Raw64"), long_name_max),
        })
    }

    /// The JSON text gocryptfs writes: tab-indented, fields in its order, a final newline.
    pub fn to_json(&self) -> Result<String, FormatError> {
        let mut buf = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
        self.json
            .serialize(&mut ser)
            .map_err(|e| FormatError::Io(format!("cannot encode {CONF_NAME}: {e}")))?;
        buf.push(b'\n');
        String::from_utf8(buf).map_err(|e| FormatError::Io(e.to_string()))
    }

    /// Writes this configuration as `CIPHERDIR/gocryptfs.conf`: mode 0400 as gocryptfs does,
    /// to a temporary file that is synced and then renamed into place. With `replace` false an
    /// existing configuration is an error and is left alone.
    pub fn write(&self, cipherdir: &Path, replace: bool) -> Result<(), FormatError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = cipherdir.join(CONF_NAME);
        if !replace && path.symlink_metadata().is_ok() {
            return Err(FormatError::Io(format!(
                "{} exists already",
                path.display()
            )));
        }
        let json = self.to_json()?;
        let tmp = cipherdir.join(format!("{CONF_NAME}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let io = |what: &str, e: std::io::Error| FormatError::Io(format!("{what}: {e}"));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&tmp)
                .map_err(|e| io(&format!("cannot create {}", tmp.display()), e))?;
            f.write_all(json.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| io(&format!("cannot write {}", tmp.display()), e))?;
            drop(f);
            if replace {
                std::fs::rename(&tmp, &path)
                    .map_err(|e| io(&format!("cannot replace {}", path.display()), e))
            } else {
                // Hard link then unlink: fails instead of replacing a file that appeared.
                std::fs::hard_link(&tmp, &path)
                    .map_err(|e| io(&format!("cannot create {}", path.display()), e))
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        result?;
        super::sync_dir(cipherdir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::from_bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn create_unlock_and_rewrap() {
        let (cfg, master) = VolumeConfig::create(&pw("secret"), "test", 10).unwrap();
        let text = cfg.to_json().unwrap();
        assert!(text.starts_with("{\n\t\"Creator\": \"test\",\n\t\"EncryptedKey\": "));
        let parsed = VolumeConfig::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.unlock(&pw("secret")).unwrap().0, master.0);
        assert!(matches!(
            parsed.unlock(&pw("wrong")),
            Err(FormatError::WrongPassword)
        ));
        let mut re = parsed.clone();
        re.wrap(&master, &pw("new"), 10).unwrap();
        assert_eq!(re.unlock(&pw("new")).unwrap().0, master.0);
        assert!(re.unlock(&pw("secret")).is_err());
    }

    // gocryptfs's own test fixture (internal/configfile/config_test/v2.conf): a v0.11 config
    // without HKDF, which we must refuse by name rather than mis-derive keys.
    #[test]
    fn refuses_pre_hkdf_and_exotic_volumes() {
        let v2 = r#"{
	"Creator": "gocryptfs v0.11-13-g96750a7-dirty",
	"EncryptedKey": "zY06x2JS0Fi7bkZ/3DppjmWZOI6xTjQ/Bf4Nru1rUzHml+stkAtvcoHT8PpHN4eKqL73ymQ86MmdYz+1",
	"ScryptObject": {"Salt": "U5MbvyTmwhEkLqe6XxlrONzPZEf2GLFZCAIixz2Kal0=", "N": 65536, "R": 8, "P": 1, "KeyLen": 32},
	"Version": 2,
	"FeatureFlags": ["GCMIV128", "DirIV", "EMENames", "LongNames"]
}"#;
        let e = VolumeConfig::parse(v2.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("HKDF"), "{e}");
        let siv = v2.replace("\"GCMIV128\"", "\"HKDF\", \"GCMIV128\", \"AESSIV\"");
        let e = VolumeConfig::parse(siv.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("AESSIV"), "{e}");
        let huge = v2
            .replace("\"GCMIV128\"", "\"HKDF\", \"GCMIV128\"")
            .replace("65536", "1099511627776");
        let e = VolumeConfig::parse(huge.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("memory"), "{e}");
        let unknown = v2.replace("\"GCMIV128\"", "\"HKDF\", \"GCMIV128\", \"Future\"");
        assert!(VolumeConfig::parse(unknown.as_bytes()).is_err());
    }
}
