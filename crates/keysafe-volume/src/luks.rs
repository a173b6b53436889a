//! LUKS2 disks bound to keysafe, through the stock `cryptsetup` (as Clevis binds a disk to a
//! Tang server): `bind` adds a key slot holding a random key that is deposited in keysafe and
//! records the binding in a LUKS2 token of type `keysafe` (slot, deposit name, owner), so the
//! device itself says which deposit opens it. `unlock` fetches the key and opens the device;
//! `unbind` removes the slot (proving the key), the token, and optionally the deposit.
//!
//! A key never touches a disk: it goes to cryptsetup on its standard input (`--key-file=-`, or
//! `-` as the new key file of `luksAddKey`). The key slot uses PBKDF2 at cryptsetup's minimum
//! cost: the key is 256 random bits, so a slow KDF would only slow the boot, not an attacker.

use crate::VolumeError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const TOKEN_TYPE: &str = "keysafe";

/// The binding recorded in the LUKS2 header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    #[serde(rename = "type")]
    pub kind: String,
    /// LUKS2 tokens name their key slots as strings.
    pub keyslots: Vec<String>,
    /// The deposit holding the key.
    pub deposit: String,
    /// The fingerprint of the client that owns the deposit.
    pub owner: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<String>,
}

/// How cryptsetup gets the passphrase of an existing slot when a new one is added.
#[derive(Debug, Clone)]
pub enum ExistingKey {
    /// A key file of the operator's.
    File(PathBuf),
    /// Bytes already in memory (read from the terminal): handed over through an anonymous
    /// memory file, never a file on disk.
    Bytes(zeroize::Zeroizing<Vec<u8>>),
}

fn cryptsetup() -> Result<Command, VolumeError> {
    let found = Command::new("cryptsetup")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        return Err(VolumeError::Tool(
            "cryptsetup is not installed (Debian package cryptsetup-bin)".into(),
        ));
    }
    Ok(Command::new("cryptsetup"))
}

/// Runs cryptsetup with `input` on stdin; its stderr becomes the error on failure.
fn run(mut cmd: Command, input: &[u8], what: &str) -> Result<Vec<u8>, VolumeError> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| VolumeError::Tool(format!("cannot run cryptsetup: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A closed pipe means cryptsetup did not want the input; its status says why.
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| VolumeError::Tool(format!("cryptsetup: {e}")))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let err = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("No usable token"))
        .collect::<Vec<_>>()
        .join(" ");
    // cryptsetup's exit code 2 is "no permission (bad passphrase)".
    if out.status.code() == Some(2) {
        return Err(VolumeError::Tool(format!(
            "{what}: the key was refused by the device ({})",
            err.trim()
        )));
    }
    Err(VolumeError::Tool(format!("{what}: {}", err.trim())))
}

/// Refuses anything that is not a LUKS2 device.
pub fn check_luks2(device: &Path) -> Result<(), VolumeError> {
    let mut c = cryptsetup()?;
    c.args(["isLuks", "--type", "luks2"]).arg(device);
    run(c, b"", "isLuks")
        .map(|_| ())
        .map_err(|_| VolumeError::Invalid(format!("{} is not a LUKS2 device", device.display())))
}

/// The LUKS2 metadata (JSON) of a device.
pub fn metadata(device: &Path) -> Result<serde_json::Value, VolumeError> {
    let mut c = cryptsetup()?;
    c.args(["luksDump", "--dump-json-metadata"]).arg(device);
    let out = run(c, b"", "luksDump")?;
    serde_json::from_slice(&out)
        .map_err(|e| VolumeError::Tool(format!("unreadable LUKS2 metadata: {e}")))
}

/// The key slots in use.
pub fn slots(meta: &serde_json::Value) -> Vec<u32> {
    meta.get("keyslots")
        .and_then(|k| k.as_object())
        .map(|o| o.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default()
}

/// The lowest free key slot (LUKS2 has 32).
pub fn free_slot(meta: &serde_json::Value) -> Result<u32, VolumeError> {
    let used = slots(meta);
    (0..32)
        .find(|s| !used.contains(s))
        .ok_or_else(|| VolumeError::Conflict("every LUKS2 key slot is in use".into()))
}

/// The keysafe tokens of a device, with their token ids.
pub fn tokens(meta: &serde_json::Value) -> Vec<(u32, Token)> {
    let Some(obj) = meta.get("tokens").and_then(|t| t.as_object()) else {
        return Vec::new();
    };
    obj.iter()
        .filter_map(|(id, v)| {
            let t: Token = serde_json::from_value(v.clone()).ok()?;
            (t.kind == TOKEN_TYPE).then_some((id.parse().ok()?, t))
        })
        .collect()
}

/// Adds `new_key` in slot `slot`, authorised by an existing slot's passphrase.
pub fn add_key(
    device: &Path,
    existing: &ExistingKey,
    new_key: &[u8],
    slot: u32,
) -> Result<(), VolumeError> {
    let mut c = cryptsetup()?;
    c.args([
        "luksAddKey",
        "--batch-mode",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-slot",
        &slot.to_string(),
    ]);
    // Kept alive until cryptsetup has read it.
    let _memfd;
    match existing {
        ExistingKey::File(p) => {
            c.arg("--key-file").arg(p);
        }
        ExistingKey::Bytes(b) => {
            let fd =
                rustix::fs::memfd_create("keysafe-existing-key", rustix::fs::MemfdFlags::CLOEXEC)
                    .map_err(|e| VolumeError::Io(format!("memfd: {e}")))?;
            let mut f = std::fs::File::from(fd);
            f.write_all(b)
                .map_err(|e| VolumeError::Io(format!("memfd: {e}")))?;
            use std::os::fd::AsRawFd;
            c.arg("--key-file")
                .arg(format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd()));
            _memfd = f;
        }
    }
    c.arg(device).arg("-");
    run(c, new_key, "luksAddKey").map(|_| ())
}

pub fn import_token(device: &Path, token: &Token) -> Result<(), VolumeError> {
    let json = serde_json::to_vec(token).map_err(|e| VolumeError::Io(e.to_string()))?;
    let mut c = cryptsetup()?;
    c.args(["token", "import", "--json-file", "-"]).arg(device);
    run(c, &json, "token import").map(|_| ())
}

pub fn remove_token(device: &Path, id: u32) -> Result<(), VolumeError> {
    let mut c = cryptsetup()?;
    c.args(["token", "remove", "--token-id", &id.to_string()])
        .arg(device);
    run(c, b"", "token remove").map(|_| ())
}

/// Checks that `key` opens the device (in slot `slot` when given) without opening it.
pub fn test_key(device: &Path, key: &[u8], slot: Option<u32>) -> Result<(), VolumeError> {
    let mut c = cryptsetup()?;
    c.args(["open", "--test-passphrase", "--key-file=-"]);
    if let Some(s) = slot {
        c.args(["--key-slot", &s.to_string()]);
    }
    c.arg(device);
    run(c, key, "test-passphrase").map(|_| ())
}

/// Opens the device as `/dev/mapper/MAPPING` (needs the device mapper).
pub fn open(device: &Path, mapping: &str, key: &[u8]) -> Result<(), VolumeError> {
    let mut c = cryptsetup()?;
    c.args(["open", "--type", "luks2", "--key-file=-"])
        .arg(device)
        .arg(mapping);
    run(c, key, "open").map(|_| ())
}

/// Removes the slot that `key` opens.
pub fn remove_key(device: &Path, key: &[u8]) -> Result<(), VolumeError> {
    let mut c = cryptsetup()?;
    c.args(["luksRemoveKey", "--batch-mode", "--key-file=-"])
        .arg(device);
    run(c, key, "luksRemoveKey").map(|_| ())
}

/// A mapping name for `cryptsetup open`: what dm accepts and nothing that needs quoting.
pub fn check_mapping(name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(VolumeError::Invalid(format!(
            "invalid mapping name {name:?}: letters, digits, '.', '_' or '-'"
        )))
    }
}
