//! Volume life cycle over keysafe: `prepare` (a new encrypted directory with a fresh random
//! password deposited in keysafe), `adopt` (take over a gocryptfs directory: re-wrap its master
//! key under a fresh deposited password), and `open` (fetch the password, unwrap the master
//! key, derive the content, name and rules keys) for mounting and checks.
//!
//! Order matters so that nothing is left half made: every check (names, table, directories,
//! recovery principals) comes before anything is written; the password exists only in memory
//! until it is deposited; a volume whose deposit fails is removed again.

use crate::VolumeError;
use crate::format::{self, Password, VolumeConfig, VolumeKeys};
use crate::keys::{self, KeyRef};
use crate::rules::RulesKey;
use crate::table::{VolumeEntry, VolumeName, VolumeTable, canonical};
use keysafe_client::Source;
use keysafe_client::vault::Vault;
use std::path::{Path, PathBuf};

/// What gocryptfs.conf says made a volume.
pub const CREATOR: &str = concat!("keysafe ", env!("CARGO_PKG_VERSION"));

/// Options shared by prepare and adopt.
#[derive(Debug, Clone)]
pub struct NewVolume {
    pub cipherdir: PathBuf,
    pub mountpoint: Option<PathBuf>,
    pub name: Option<VolumeName>,
    /// Principals to share the key with (`group:recovery`).
    pub recovery: Vec<String>,
    /// Mount at boot.
    pub auto: bool,
    pub scrypt_log_n: u8,
}

fn check_mountpoint(mp: &Option<PathBuf>) -> Result<Option<PathBuf>, VolumeError> {
    let Some(mp) = mp else {
        return Ok(None);
    };
    let canon = canonical(mp);
    if !canon.is_dir() {
        return Err(VolumeError::Invalid(format!(
            "mount point {} is not a directory",
            mp.display()
        )));
    }
    Ok(Some(canon))
}

/// Checks the table has room for the volume; returns its name and entry.
fn plan(table: &VolumeTable, v: &NewVolume, cipherdir: &Path) -> Result<VolumeEntry, VolumeError> {
    let name = match &v.name {
        Some(n) => n.clone(),
        None => VolumeName::from_dir(cipherdir)?,
    };
    let mountpoint = check_mountpoint(&v.mountpoint)?;
    if let Some(mp) = &mountpoint
        && (mp.starts_with(cipherdir) || cipherdir.starts_with(mp))
    {
        return Err(VolumeError::Invalid(
            "the mount point and the cipher directory may not contain one another".into(),
        ));
    }
    for other in table.load()? {
        let same_mount = mountpoint.is_some() && other.mountpoint == mountpoint;
        if other.name == name || other.cipherdir == cipherdir || same_mount {
            return Err(VolumeError::Conflict(format!(
                "the volume table already has {} ({}); choose another --name or run \
                 `keysafe volume forget {}`",
                other.name,
                other.cipherdir.display(),
                other.name
            )));
        }
    }
    Ok(VolumeEntry {
        key_deposit: name.key_deposit()?.as_str().to_owned(),
        name,
        cipherdir: cipherdir.to_owned(),
        mountpoint,
        key_owner: None,
        recovery: v.recovery.clone(),
        auto: v.auto,
    })
}

/// Removes what `init_volume` wrote into a directory that was empty before.
fn unmake(cipherdir: &Path) {
    for f in [format::config::CONF_NAME, format::names::DIRIV_NAME] {
        let p = cipherdir.join(f);
        // gocryptfs.conf is 0400; root can remove it regardless, the owner too (the
        // directory is what decides).
        let _ = std::fs::remove_file(&p);
    }
}

/// Creates a new volume in `v.cipherdir` (created 0700 if missing; must be empty), deposits its
/// password as `volume/NAME`, shares it with the recovery principals and adds it to the table.
pub async fn prepare(
    vault: &Vault,
    table: &VolumeTable,
    v: &NewVolume,
) -> Result<VolumeEntry, VolumeError> {
    let existed = v.cipherdir.exists();
    if existed {
        let mut rd = std::fs::read_dir(&v.cipherdir).map_err(|e| {
            VolumeError::Invalid(format!("cannot read {}: {e}", v.cipherdir.display()))
        })?;
        if rd.next().is_some() {
            return Err(VolumeError::Invalid(format!(
                "{} is not empty (use `keysafe volume adopt` for a gocryptfs directory)",
                v.cipherdir.display()
            )));
        }
    }
    let cipherdir_abs = canonical(&v.cipherdir);
    let entry = plan(table, v, &cipherdir_abs)?;
    keys::check_recovery(vault, &v.recovery).await?;
    if !existed {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&v.cipherdir)
            .map_err(|e| {
                VolumeError::Io(format!("cannot create {}: {e}", v.cipherdir.display()))
            })?;
    }
    let cipherdir = canonical(&v.cipherdir);
    let password = Password::generate()?;
    let log_n = v.scrypt_log_n;
    let dir = cipherdir.clone();
    let pw = Password::from_bytes(password.as_bytes().to_vec());
    tokio::task::spawn_blocking(move || format::init_volume(&dir, &pw, CREATOR, log_n))
        .await
        .map_err(|e| VolumeError::Io(e.to_string()))??;
    let entry = VolumeEntry { cipherdir, ..entry };
    let deposit = entry.key_deposit()?;
    if let Err(e) = keys::deposit_key(vault, &deposit, password.as_bytes(), &v.recovery).await {
        if !matches!(e, VolumeError::Incomplete(_)) {
            // No key in keysafe: the volume would be unopenable. Take it away again.
            unmake(&entry.cipherdir);
            if !existed {
                let _ = std::fs::remove_dir(&entry.cipherdir);
            }
        }
        return Err(e);
    }
    table.add(entry.clone()).map_err(|e| {
        VolumeError::Incomplete(format!(
            "the volume is made and its key deposited as {}, but the table was not updated: {e}",
            entry.key_deposit
        ))
    })?;
    Ok(entry)
}

/// Takes over a gocryptfs directory: unwraps its master key with `old_password`, deposits a
/// fresh random password, re-wraps the master key under it (the old password no longer opens
/// this `gocryptfs.conf`) and adds the volume to the table.
pub async fn adopt(
    vault: &Vault,
    table: &VolumeTable,
    v: &NewVolume,
    old_password: Password,
) -> Result<VolumeEntry, VolumeError> {
    let cipherdir = canonical(&v.cipherdir);
    let mut cfg = VolumeConfig::load(&cipherdir)?;
    let entry = plan(table, v, &cipherdir)?;
    keys::check_recovery(vault, &v.recovery).await?;
    let c2 = cfg.clone();
    let master = tokio::task::spawn_blocking(move || c2.unlock(&old_password))
        .await
        .map_err(|e| VolumeError::Io(e.to_string()))??;
    let password = Password::generate()?;
    let deposit = entry.key_deposit()?;
    keys::deposit_key(vault, &deposit, password.as_bytes(), &v.recovery).await?;
    let log_n = v.scrypt_log_n;
    let dir = cipherdir.clone();
    tokio::task::spawn_blocking(move || {
        cfg.wrap(&master, &password, log_n)?;
        cfg.write(&dir, true)
    })
    .await
    .map_err(|e| VolumeError::Io(e.to_string()))?
    .map_err(|e| {
        VolumeError::Incomplete(format!(
            "the new key is deposited as {deposit} but gocryptfs.conf was not rewritten ({e}); \
             the old password still opens the volume"
        ))
    })?;
    table.add(entry.clone()).map_err(|e| {
        VolumeError::Incomplete(format!(
            "the volume now opens with the key deposited as {deposit}, but the table was not \
             updated: {e}"
        ))
    })?;
    Ok(entry)
}

/// A volume ready to mount.
pub struct Opened {
    pub config: VolumeConfig,
    pub keys: VolumeKeys,
    pub rules_key: RulesKey,
    /// Where the password came from (a stale cached copy is reported by the caller).
    pub source: Source,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Fetches the password of `entry` from keysafe and opens its configuration.
pub async fn open(vault: &Vault, entry: &VolumeEntry) -> Result<Opened, VolumeError> {
    let key = KeyRef {
        deposit: entry.key_deposit()?,
        owner: entry.key_owner.clone(),
    };
    let fetched = keys::fetch_key(vault, &key).await?;
    let password = Password::from_bytes(fetched.secret.to_vec());
    let config = VolumeConfig::load(&entry.cipherdir)?;
    let rules_key = RulesKey::derive(&password, entry.name.as_str())?;
    let cfg = config.clone();
    let keys = tokio::task::spawn_blocking(move || {
        let master = cfg.unlock(&password)?;
        cfg.keys(&master)
    })
    .await
    .map_err(|e| VolumeError::Io(e.to_string()))??;
    Ok(Opened {
        config,
        keys,
        rules_key,
        source: fetched.source,
    })
}

/// The rule file of a volume.
pub fn rules_path(table: &VolumeTable, name: &VolumeName) -> PathBuf {
    table.volumes_dir().join(format!("{name}.rules.json"))
}
