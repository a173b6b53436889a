//! The volume table (`volumes.toml`): the volumes this host knows, where their cipher
//! directories and mount points are, which deposit holds each key, and whether boot mounts it.
//! `prepare` and `adopt` add an entry; `keysafe volume mount --all` (and the systemd unit) mount
//! the `auto` ones. Read-modify-write happens under an exclusive lock on `volumes.toml.lock`, and
//! the file is replaced atomically, so two commands at once never lose an entry.

use crate::VolumeError;
use keysafe_proto::DepositName;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const TABLE_FILE: &str = "volumes.toml";
/// Per-volume files (rules, run state, logs) live in this directory beside the table.
pub const VOLUMES_DIR: &str = "volumes";

/// A volume's name: 1-64 of `[A-Za-z0-9._-]`, starting with a letter or digit. It names the
/// key deposit (`volume/NAME`), the rules file and the mount source (`keysafe:NAME`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeName(String);

impl VolumeName {
    pub fn parse(s: &str) -> Result<Self, VolumeError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(VolumeError::Invalid(format!(
                "invalid volume name {s:?}: 1-64 letters, digits, '.', '_' or '-', starting \
                 with a letter or digit"
            )))
        }
    }

    /// A name from a directory's last component, made valid.
    pub fn from_dir(dir: &Path) -> Result<Self, VolumeError> {
        let base = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cleaned: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .trim_start_matches(['.', '_', '-'])
            .chars()
            .take(64)
            .collect();
        Self::parse(&cleaned).map_err(|_| {
            VolumeError::Invalid(format!(
                "cannot make a volume name from {}; give --name",
                dir.display()
            ))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The default key deposit of a volume (`volume/NAME`).
    pub fn key_deposit(&self) -> Result<DepositName, VolumeError> {
        DepositName::parse(&format!("volume/{}", self.0))
            .map_err(|e| VolumeError::Invalid(e.message().to_owned()))
    }
}

impl TryFrom<String> for VolumeName {
    type Error = VolumeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<VolumeName> for String {
    fn from(v: VolumeName) -> Self {
        v.0
    }
}

impl std::fmt::Display for VolumeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeEntry {
    pub name: VolumeName,
    /// The cipher directory (absolute).
    pub cipherdir: PathBuf,
    /// Where it is mounted (absolute), if it has a usual place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<PathBuf>,
    /// The deposit that holds the volume's password.
    pub key_deposit: String,
    /// The deposit's owner when it is not this client (a recovered volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_owner: Option<String>,
    /// Principals the key was shared with at prepare time (for the record; the deposit's ACL
    /// is what counts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<String>,
    /// Mount at boot (`keysafe volume mount --all`).
    #[serde(default = "yes")]
    pub auto: bool,
}

fn yes() -> bool {
    true
}

impl VolumeEntry {
    pub fn key_deposit(&self) -> Result<DepositName, VolumeError> {
        DepositName::parse(&self.key_deposit)
            .map_err(|e| VolumeError::Invalid(format!("key_deposit: {}", e.message())))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default, rename = "volume")]
    volumes: Vec<VolumeEntry>,
}

/// The table at a path.
#[derive(Debug, Clone)]
pub struct VolumeTable {
    path: PathBuf,
}

struct Lock(#[allow(dead_code)] std::fs::File);

impl VolumeTable {
    pub fn at(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory for per-volume files (rules, run state, logs), created 0700 on demand.
    pub fn volumes_dir(&self) -> PathBuf {
        self.path
            .parent()
            .unwrap_or(Path::new("."))
            .join(VOLUMES_DIR)
    }

    pub fn ensure_volumes_dir(&self) -> Result<PathBuf, VolumeError> {
        let d = self.volumes_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|e| VolumeError::Io(format!("cannot create {}: {e}", d.display())))?;
        Ok(d)
    }

    fn lock(&self) -> Result<Lock, VolumeError> {
        let lock_path = self.path.with_extension("toml.lock");
        if let Some(dir) = lock_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| VolumeError::Io(format!("cannot create {}: {e}", dir.display())))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| VolumeError::Io(format!("cannot open {}: {e}", lock_path.display())))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| VolumeError::Io(format!("cannot lock {}: {e}", lock_path.display())))?;
        Ok(Lock(f))
    }

    pub fn load(&self) -> Result<Vec<VolumeEntry>, VolumeError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(VolumeError::Io(format!(
                    "cannot read {}: {e}",
                    self.path.display()
                )));
            }
        };
        let t: TableFile = toml::from_str(&text).map_err(|e| {
            VolumeError::Invalid(format!("{} is not valid: {e}", self.path.display()))
        })?;
        Ok(t.volumes)
    }

    fn save(&self, volumes: Vec<VolumeEntry>) -> Result<(), VolumeError> {
        let text = toml::to_string(&TableFile { volumes })
            .map_err(|e| VolumeError::Io(format!("cannot encode the volume table: {e}")))?;
        let tmp = self.path.with_extension("toml.tmp");
        let io = |e: std::io::Error| {
            VolumeError::Io(format!("cannot write {}: {e}", self.path.display()))
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(b"# keysafe volume table: written by `keysafe volume prepare/adopt/forget`.\n")
            .and_then(|_| f.write_all(text.as_bytes()))
            .and_then(|_| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// Adds `entry`; a volume with the same name, cipher directory or mount point is an error.
    pub fn add(&self, entry: VolumeEntry) -> Result<(), VolumeError> {
        let _lock = self.lock()?;
        let mut all = self.load()?;
        if let Some(other) = all.iter().find(|v| {
            v.name == entry.name
                || v.cipherdir == entry.cipherdir
                || (v.mountpoint.is_some() && v.mountpoint == entry.mountpoint)
        }) {
            return Err(VolumeError::Conflict(format!(
                "the volume table already has {} ({}); remove it first (keysafe volume forget {})",
                other.name,
                other.cipherdir.display(),
                other.name
            )));
        }
        all.push(entry);
        self.save(all)
    }

    /// Removes the volume `name` from the table (its files and key are left alone).
    pub fn remove(&self, name: &VolumeName) -> Result<VolumeEntry, VolumeError> {
        let _lock = self.lock()?;
        let mut all = self.load()?;
        let pos = all
            .iter()
            .position(|v| &v.name == name)
            .ok_or_else(|| VolumeError::NotFound(format!("no volume {name} in the table")))?;
        let e = all.remove(pos);
        self.save(all)?;
        Ok(e)
    }

    /// The volume whose name, cipher directory or mount point is `what`.
    pub fn find(&self, what: &str) -> Result<VolumeEntry, VolumeError> {
        let all = self.load()?;
        let as_path = canonical(Path::new(what));
        all.into_iter()
            .find(|v| {
                v.name.as_str() == what
                    || v.cipherdir == as_path
                    || v.mountpoint.as_deref() == Some(as_path.as_path())
            })
            .ok_or_else(|| {
                VolumeError::NotFound(format!(
                    "no volume {what} in {} (keysafe volume prepare or adopt adds one)",
                    self.path.display()
                ))
            })
    }
}

/// An absolute, symlink-free form of `p` when it exists, else `p` made absolute.
pub fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_owned())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, dir: &str) -> VolumeEntry {
        VolumeEntry {
            name: VolumeName::parse(name).unwrap(),
            cipherdir: PathBuf::from(dir),
            mountpoint: Some(PathBuf::from(format!("/mnt/{name}"))),
            key_deposit: format!("volume/{name}"),
            key_owner: None,
            recovery: vec!["group:recovery".into()],
            auto: true,
        }
    }

    #[test]
    fn add_find_remove_and_conflicts() {
        let d = tempfile::tempdir().unwrap();
        let t = VolumeTable::at(d.path().join(TABLE_FILE));
        assert!(t.load().unwrap().is_empty());
        t.add(entry("db", "/srv/db.enc")).unwrap();
        t.add(entry("logs", "/srv/logs.enc")).unwrap();
        assert!(t.add(entry("db", "/srv/other")).is_err());
        assert!(t.add(entry("x", "/srv/db.enc")).is_err());
        assert_eq!(t.find("db").unwrap().cipherdir, Path::new("/srv/db.enc"));
        assert_eq!(t.find("/mnt/logs").unwrap().name.as_str(), "logs");
        assert!(t.find("nope").is_err());
        t.remove(&VolumeName::parse("db").unwrap()).unwrap();
        assert_eq!(t.load().unwrap().len(), 1);
    }

    #[test]
    fn names() {
        assert!(VolumeName::parse("db-1.main_x").is_ok());
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(VolumeName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            VolumeName::from_dir(Path::new("/srv/.my data"))
                .unwrap()
                .as_str(),
            "my-data"
        );
        assert_eq!(
            VolumeName::parse("db")
                .unwrap()
                .key_deposit()
                .unwrap()
                .as_str(),
            "volume/db"
        );
    }
}
