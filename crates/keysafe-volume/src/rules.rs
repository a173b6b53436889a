//! Process access rules, in the manner of Navigator Encrypt's ACLs: a rule opens a path prefix
//! of the volume to one executable (by path, optionally pinned to its SHA-256, optionally only
//! when it runs a given script). When rules cover a path, only a process matching one of them
//! may open, create, list, change or remove anything under it; others get `EACCES`. Paths no
//! rule covers stay open to everyone the kernel's permission checks let through.
//!
//! Modes: `enforcing` denies, `permissive` allows but logs what it would deny, `admin` lets
//! everything through and logs each use of a covered path.
//!
//! The rule file (`volumes/NAME.rules.json`) carries an HMAC-SHA256 over its content, keyed by a
//! key derived (HKDF) from the volume's password, which lives in keysafe: editing the file on
//! disk without that key makes it fail verification. A file that does not verify refuses the
//! mount, and makes a mounted volume deny every covered operation until it is fixed (fail
//! closed). A valid older file put back (a lower serial than the mount has seen) counts as
//! tampering too.

use crate::VolumeError;
use crate::format::Password;
use crate::fs::{Access, AccessGate};
use crate::procinfo::{Caller, HashCache};
use fuser::Errno;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use zeroize::Zeroizing;

const FORMAT: u32 = 1;
const HKDF_SALT: &[u8] = b"keysafe volume rules v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforcing,
    Permissive,
    Admin,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Self, VolumeError> {
        match s {
            "enforcing" => Ok(Mode::Enforcing),
            "permissive" => Ok(Mode::Permissive),
            "admin" => Ok(Mode::Admin),
            _ => Err(VolumeError::Invalid(format!(
                "unknown mode {s:?}: enforcing, permissive or admin"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforcing => "enforcing",
            Mode::Permissive => "permissive",
            Mode::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: u32,
    /// The path inside the volume this rule opens (`/` is the whole volume).
    pub prefix: String,
    /// The allowed executable (absolute, as `/proc/PID/exe` shows it).
    pub exe: String,
    /// Its SHA-256 (hex) when pinned: a different binary at the same path does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// For interpreters: the script the process must run as its first argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub format: u32,
    pub volume: String,
    /// Incremented by every change.
    pub serial: u64,
    pub mode: Mode,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    ruleset: RuleSet,
    /// HMAC-SHA256 (hex) of the canonical JSON of `ruleset`.
    mac: String,
}

/// The MAC key of a volume's rules. Zeroised on drop.
pub struct RulesKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for RulesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RulesKey([redacted])")
    }
}

impl RulesKey {
    /// HKDF-SHA256 of the volume password, bound to the volume's name.
    pub fn derive(password: &Password, volume: &str) -> Result<Self, VolumeError> {
        use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
        struct Len;
        impl aws_lc_rs::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let mut out = Zeroizing::new([0u8; 32]);
        let info = [volume.as_bytes()];
        Salt::new(HKDF_SHA256, HKDF_SALT)
            .extract(password.as_bytes())
            .expand(&info, Len)
            .and_then(|okm| okm.fill(&mut out[..]))
            .map_err(|_| VolumeError::Io("HKDF failed".into()))?;
        Ok(Self(out))
    }

    fn hmac(&self) -> aws_lc_rs::hmac::Key {
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0[..])
    }
}

/// Checks a rule prefix: absolute, no `.`/`..`, no empty components; returns it normalised
/// (no trailing slash except for `/`).
pub fn normalize_prefix(p: &str) -> Result<String, VolumeError> {
    if !p.starts_with('/') {
        return Err(VolumeError::Invalid(format!(
            "path prefix {p:?} must be absolute inside the volume (\"/\" is all of it)"
        )));
    }
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if parts.iter().any(|s| *s == "." || *s == "..") {
        return Err(VolumeError::Invalid(format!(
            "path prefix {p:?} may not contain . or .."
        )));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Whether rule prefix `prefix` covers `path` (component-wise: `/db` covers `/db/x`, not `/dbx`).
pub fn covers(prefix: &str, path: &Path) -> bool {
    prefix == "/" || path.starts_with(prefix)
}

impl RuleSet {
    pub fn new(volume: &str) -> Self {
        Self {
            format: FORMAT,
            volume: volume.to_owned(),
            serial: 0,
            mode: Mode::Enforcing,
            rules: Vec::new(),
        }
    }

    fn mac(&self, key: &RulesKey) -> Result<aws_lc_rs::hmac::Tag, VolumeError> {
        let body = serde_json::to_vec(self)
            .map_err(|e| VolumeError::Io(format!("cannot encode rules: {e}")))?;
        Ok(aws_lc_rs::hmac::sign(&key.hmac(), &body))
    }

    /// Reads and verifies the rule file; `None` when there is none.
    pub fn load(path: &Path, key: &RulesKey, volume: &str) -> Result<Option<Self>, VolumeError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(VolumeError::Io(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let tampered = |why: &str| {
            VolumeError::Tampered(format!(
                "the rule file {} {why}: it was changed outside keysafe; restore it or \
                 rewrite it with `keysafe volume acl`",
                path.display()
            ))
        };
        let file: RuleFile =
            serde_json::from_slice(&text).map_err(|_| tampered("is not a valid rule file"))?;
        let mac = hex::decode(&file.mac).map_err(|_| tampered("has no valid MAC"))?;
        let body = serde_json::to_vec(&file.ruleset)
            .map_err(|e| VolumeError::Io(format!("cannot encode rules: {e}")))?;
        aws_lc_rs::hmac::verify(&key.hmac(), &body, &mac)
            .map_err(|_| tampered("does not verify"))?;
        if file.ruleset.volume != volume || file.ruleset.format != FORMAT {
            return Err(tampered("belongs to another volume"));
        }
        Ok(Some(file.ruleset))
    }

    /// Writes the rule file atomically (mode 0600) with its MAC.
    pub fn save(&self, path: &Path, key: &RulesKey) -> Result<(), VolumeError> {
        let file = RuleFile {
            ruleset: self.clone(),
            mac: hex::encode(self.mac(key)?.as_ref()),
        };
        let text = serde_json::to_vec_pretty(&file)
            .map_err(|e| VolumeError::Io(format!("cannot encode rules: {e}")))?;
        let tmp = path.with_extension("json.tmp");
        let io =
            |e: std::io::Error| VolumeError::Io(format!("cannot write {}: {e}", path.display()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&text)
            .and_then(|_| f.write_all(b"\n"))
            .and_then(|_| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Adds a rule with the next free id and bumps the serial.
    pub fn add(&mut self, mut rule: Rule) -> u32 {
        rule.id = self.rules.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        let id = rule.id;
        self.rules.push(rule);
        self.serial += 1;
        id
    }

    pub fn remove(&mut self, id: u32) -> Result<Rule, VolumeError> {
        let pos = self
            .rules
            .iter()
            .position(|r| r.id == id)
            .ok_or_else(|| VolumeError::NotFound(format!("no rule {id}")))?;
        self.serial += 1;
        Ok(self.rules.remove(pos))
    }

    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.serial += 1;
    }
}

/// A decision for one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No rule covers the path.
    Uncovered,
    /// A rule matched the caller (its id).
    Allowed(u32),
    Denied,
}

fn rule_matches(r: &Rule, caller: &Caller, hashes: &HashCache) -> bool {
    let Some(exe) = &caller.exe else {
        return false;
    };
    if exe.as_os_str() != std::ffi::OsStr::new(&r.exe) {
        return false;
    }
    if let Some(script) = &r.script
        && caller.script.as_deref() != Some(Path::new(script))
    {
        return false;
    }
    if let Some(want) = &r.sha256 {
        let Some(have) = hashes.exe_sha256(caller.pid) else {
            return false;
        };
        if !hex::encode(have).eq_ignore_ascii_case(want) {
            return false;
        }
    }
    true
}

/// Decides for `caller` on `path`.
pub fn decide(set: &RuleSet, caller: &Caller, path: &Path, hashes: &HashCache) -> Decision {
    let mut covered = false;
    for r in set.rules.iter().filter(|r| covers(&r.prefix, path)) {
        covered = true;
        if rule_matches(r, caller, hashes) {
            return Decision::Allowed(r.id);
        }
    }
    if covered {
        Decision::Denied
    } else {
        Decision::Uncovered
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec(),
    })
}

#[derive(Debug)]
struct Loaded {
    stamp: Option<Stamp>,
    /// `Err`: the file does not verify (every covered operation is denied).
    rules: Result<Option<RuleSet>, String>,
    highest_serial: u64,
}

/// The rules of a mounted volume, reloaded whenever the file changes.
pub struct RuleGate {
    volume: String,
    path: PathBuf,
    key: RulesKey,
    loaded: RwLock<Loaded>,
    hashes: HashCache,
    me: u32,
}

impl std::fmt::Debug for RuleGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleGate")
            .field("volume", &self.volume)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RuleGate {
    /// Loads and verifies the rule file (a missing file is no rules); a file that does not
    /// verify is an error, so the volume is not mounted.
    pub fn new(volume: &str, path: PathBuf, key: RulesKey) -> Result<Self, VolumeError> {
        let st = stamp(&path);
        let rules = RuleSet::load(&path, &key, volume)?;
        let highest_serial = rules.as_ref().map(|r| r.serial).unwrap_or(0);
        Ok(Self {
            volume: volume.to_owned(),
            path,
            key,
            loaded: RwLock::new(Loaded {
                stamp: st,
                rules: Ok(rules),
                highest_serial,
            }),
            hashes: HashCache::default(),
            me: std::process::id(),
        })
    }

    /// Re-reads the file when its identity, size or times changed.
    fn refresh(&self) {
        let now = stamp(&self.path);
        if self.loaded.read().map(|l| l.stamp == now).unwrap_or(false) {
            return;
        }
        let Ok(mut l) = self.loaded.write() else {
            return;
        };
        if l.stamp == now {
            return;
        }
        l.stamp = now;
        l.rules = match RuleSet::load(&self.path, &self.key, &self.volume) {
            Ok(Some(set)) if set.serial < l.highest_serial => {
                let msg = format!(
                    "the rule file {} went back from serial {} to {}: an old copy was put back",
                    self.path.display(),
                    l.highest_serial,
                    set.serial
                );
                tracing::error!(volume = %self.volume, "{msg}; denying every covered operation");
                Err(msg)
            }
            Ok(rules) => {
                if let Some(s) = &rules {
                    l.highest_serial = l.highest_serial.max(s.serial);
                    tracing::info!(
                        volume = %self.volume,
                        serial = s.serial,
                        mode = s.mode.as_str(),
                        rules = s.rules.len(),
                        "access rules loaded"
                    );
                }
                rules.map_or(Ok(None), |s| Ok(Some(s)))
            }
            Err(e) => {
                tracing::error!(volume = %self.volume, error = %e, "denying every operation");
                Err(e.to_string())
            }
        };
    }
}

impl AccessGate for RuleGate {
    fn guards(&self) -> bool {
        self.refresh();
        match self.loaded.read() {
            Ok(l) => match &l.rules {
                Err(_) => true,
                Ok(Some(set)) => !set.rules.is_empty(),
                Ok(None) => false,
            },
            Err(_) => true,
        }
    }

    fn check(&self, pid: u32, access: Access, path: &Path) -> Result<(), Errno> {
        if pid == self.me {
            return Ok(());
        }
        let Ok(l) = self.loaded.read() else {
            return Err(Errno::EACCES);
        };
        let set = match &l.rules {
            Ok(Some(set)) => set,
            Ok(None) => return Ok(()),
            Err(why) => {
                tracing::warn!(
                    target: "keysafe_volume::access",
                    volume = %self.volume,
                    pid,
                    path = %path.display(),
                    access = access.as_str(),
                    "access denied: {why}"
                );
                return Err(Errno::EACCES);
            }
        };
        let caller = Caller::of(pid);
        let decision = decide(set, &caller, path, &self.hashes);
        match (decision, set.mode) {
            (Decision::Uncovered, _) | (Decision::Allowed(_), _) => Ok(()),
            (Decision::Denied, Mode::Admin) => {
                tracing::info!(
                    target: "keysafe_volume::access",
                    volume = %self.volume,
                    process = %caller.describe(),
                    path = %path.display(),
                    access = access.as_str(),
                    serial = set.serial,
                    "admin mode: access allowed without a matching rule"
                );
                Ok(())
            }
            (Decision::Denied, Mode::Permissive) => {
                tracing::warn!(
                    target: "keysafe_volume::access",
                    volume = %self.volume,
                    process = %caller.describe(),
                    path = %path.display(),
                    access = access.as_str(),
                    serial = set.serial,
                    rules = %rule_summary(set, path),
                    "permissive mode: access would be denied"
                );
                Ok(())
            }
            (Decision::Denied, Mode::Enforcing) => {
                tracing::warn!(
                    target: "keysafe_volume::access",
                    volume = %self.volume,
                    process = %caller.describe(),
                    path = %path.display(),
                    access = access.as_str(),
                    serial = set.serial,
                    rules = %rule_summary(set, path),
                    "access denied"
                );
                Err(Errno::EACCES)
            }
        }
    }
}

/// The rules covering `path`, for the log line of a denial.
fn rule_summary(set: &RuleSet, path: &Path) -> String {
    set.rules
        .iter()
        .filter(|r| covers(&r.prefix, path))
        .map(|r| {
            let mut s = format!("#{} {} -> {}", r.id, r.prefix, r.exe);
            if r.sha256.is_some() {
                s.push_str(" (sha256 pinned)");
            }
            if let Some(sc) = &r.script {
                s.push_str(&format!(" script {sc}"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RulesKey {
        RulesKey::derive(&Password::from_bytes(b"pw".to_vec()), "v").unwrap()
    }

    fn rule(prefix: &str, exe: &str) -> Rule {
        Rule {
            id: 0,
            prefix: prefix.into(),
            exe: exe.into(),
            sha256: None,
            script: None,
        }
    }

    #[test]
    fn save_load_and_tamper() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.rules.json");
        let k = key();
        assert!(RuleSet::load(&p, &k, "v").unwrap().is_none());
        let mut set = RuleSet::new("v");
        set.add(rule("/db", "/usr/bin/cat"));
        set.save(&p, &k).unwrap();
        assert_eq!(RuleSet::load(&p, &k, "v").unwrap().unwrap(), set);
        // Another volume's key, or another volume name, does not verify.
        let other = RulesKey::derive(&Password::from_bytes(b"pw".to_vec()), "w").unwrap();
        assert!(matches!(
            RuleSet::load(&p, &other, "v"),
            Err(VolumeError::Tampered(_))
        ));
        // An edit on disk does not verify.
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("/usr/bin/cat", "/usr/bin/tac")).unwrap();
        assert!(matches!(
            RuleSet::load(&p, &k, "v"),
            Err(VolumeError::Tampered(_))
        ));
    }

    #[test]
    fn prefixes_and_decisions() {
        assert_eq!(normalize_prefix("/db//x/").unwrap(), "/db/x");
        assert_eq!(normalize_prefix("/").unwrap(), "/");
        assert!(normalize_prefix("db").is_err());
        assert!(normalize_prefix("/a/../b").is_err());
        assert!(covers("/db", Path::new("/db/x")));
        assert!(covers("/db", Path::new("/db")));
        assert!(!covers("/db", Path::new("/dbx")));
        assert!(covers("/", Path::new("/anything")));

        let mut set = RuleSet::new("v");
        let me = std::env::current_exe().unwrap();
        set.add(rule("/db", me.to_str().unwrap()));
        let hashes = HashCache::default();
        let caller = Caller::of(std::process::id());
        assert_eq!(
            decide(&set, &caller, Path::new("/db/x"), &hashes),
            Decision::Allowed(1)
        );
        assert_eq!(
            decide(&set, &caller, Path::new("/other"), &hashes),
            Decision::Uncovered
        );
        let stranger = Caller {
            pid: 1,
            exe: Some(PathBuf::from("/usr/bin/false")),
            script: None,
        };
        assert_eq!(
            decide(&set, &stranger, Path::new("/db/x"), &hashes),
            Decision::Denied
        );
        // A pinned hash that is not the binary's does not match.
        set.rules[0].sha256 = Some("00".repeat(32));
        assert_eq!(
            decide(&set, &caller, Path::new("/db/x"), &hashes),
            Decision::Denied
        );
        let real = hex::encode(crate::procinfo::sha256_file(&me).unwrap());
        set.rules[0].sha256 = Some(real);
        assert_eq!(
            decide(&set, &caller, Path::new("/db/x"), &hashes),
            Decision::Allowed(1)
        );
    }
}
