//! What is mounted where: `/proc/self/mountinfo` (keysafe mounts show as type `fuse.keysafe`
//! with source `keysafe:NAME`), and the run state a mount daemon leaves beside the volume table
//! (`volumes/NAME.run.json`: its pid and mount point) while it serves the volume.

use crate::VolumeError;
use crate::table::VolumeName;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The mount source of a volume.
pub fn source_of(name: &VolumeName) -> String {
    format!("keysafe:{name}")
}

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountInfo {
                mountpoint: PathBuf::from(unescape(fields.get(4)?)),
                fstype: (*fields.get(sep + 1)?).to_owned(),
                source: unescape(fields.get(sep + 2)?),
            })
        })
        .collect()
}

pub fn mounts() -> Vec<MountInfo> {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Where volume `name` of the table whose per-volume directory is `volumes_dir` is mounted: its
/// serving process is alive and its mount point carries the volume's mount. (Another table on the
/// same host may have a volume of the same name; the run state tells them apart.)
pub fn mounted_at(volumes_dir: &Path, name: &VolumeName) -> Option<PathBuf> {
    let state = RunState::read(volumes_dir, name)?;
    if !state.alive() {
        return None;
    }
    let src = source_of(name);
    mounts()
        .into_iter()
        .find(|m| {
            m.mountpoint == state.mountpoint && m.source == src && m.fstype.starts_with("fuse")
        })
        .map(|m| m.mountpoint)
}

/// Whether anything is mounted at `path`.
pub fn is_mount_point(path: &Path) -> Option<MountInfo> {
    let canon = crate::table::canonical(path);
    mounts().into_iter().rev().find(|m| m.mountpoint == canon)
}

/// A running mount daemon's state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunState {
    pub pid: u32,
    pub name: VolumeName,
    pub cipherdir: PathBuf,
    pub mountpoint: PathBuf,
    /// Seconds since the Unix epoch.
    pub started: u64,
}

pub fn run_path(volumes_dir: &Path, name: &VolumeName) -> PathBuf {
    volumes_dir.join(format!("{name}.run.json"))
}

impl RunState {
    pub fn write(&self, volumes_dir: &Path) -> Result<(), VolumeError> {
        let path = run_path(volumes_dir, &self.name);
        let text = serde_json::to_vec_pretty(self).map_err(|e| VolumeError::Io(e.to_string()))?;
        let io =
            |e: std::io::Error| VolumeError::Io(format!("cannot write {}: {e}", path.display()));
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    pub fn read(volumes_dir: &Path, name: &VolumeName) -> Option<Self> {
        let text = std::fs::read(run_path(volumes_dir, name)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn remove(volumes_dir: &Path, name: &VolumeName) {
        let _ = std::fs::remove_file(run_path(volumes_dir, name));
    }

    /// The daemon is still running (its pid exists and is a keysafe process).
    pub fn alive(&self) -> bool {
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|c| c.windows(7).any(|w| w == b"keysafe"))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let text = "36 35 98:0 / /mnt/with\\040space rw,nosuid - fuse.keysafe keysafe:db rw,user_id=0\n\
                    37 35 98:0 / /srv rw shared:1 - ext4 /dev/vda rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, Path::new("/mnt/with space"));
        assert_eq!(m[0].fstype, "fuse.keysafe");
        assert_eq!(m[0].source, "keysafe:db");
        assert_eq!(m[1].source, "/dev/vda");
    }
}
