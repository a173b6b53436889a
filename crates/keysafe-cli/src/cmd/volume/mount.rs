//! `keysafe volume mount` and `umount`. A mount is served by a keysafe process: in the
//! foreground (`--foreground`, what the systemd unit runs; it tells systemd it is ready through
//! `NOTIFY_SOCKET`), or by default in a background process started from this one, which reports
//! `ready` once mounted and logs to `volumes/NAME.log` beside the volume table. The serving
//! process records its pid in `volumes/NAME.run.json` and unmounts on SIGTERM or SIGINT.

use super::{MountArgs, UmountArgs, home_and_client, table_of, verr, warn_stale};
use crate::cmd::vault_for;
use crate::exit::usage;
use anyhow::Context;
use keysafe_client::ClientHome;
use keysafe_volume::VolumeError;
use keysafe_volume::fs::{MountConfig, VolumeFs};
use keysafe_volume::manage;
use keysafe_volume::mounts::{self, RunState};
use keysafe_volume::rules::RuleGate;
use keysafe_volume::table::{VolumeEntry, VolumeName, VolumeTable, canonical};
use std::io::{BufRead, Read, Seek};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// What to mount where.
struct Target {
    entry: VolumeEntry,
    mountpoint: PathBuf,
}

fn resolve(a: &MountArgs, table: &VolumeTable) -> anyhow::Result<Vec<Target>> {
    let with_mp = |entry: VolumeEntry, mp: Option<PathBuf>| -> anyhow::Result<Target> {
        let mountpoint = mp.or_else(|| entry.mountpoint.clone()).ok_or_else(|| {
            usage(format!(
                "volume {} has no mount point in the table: give one",
                entry.name
            ))
        })?;
        Ok(Target {
            entry,
            mountpoint: canonical(&mountpoint),
        })
    };
    if a.all {
        if !a.target.is_empty() {
            return Err(usage("--all takes no volume"));
        }
        return table
            .load()
            .map_err(verr)?
            .into_iter()
            .filter(|e| e.auto)
            .map(|e| with_mp(e, None))
            .collect();
    }
    if let Some(key) = &a.key {
        // Recovery: a volume this host's table does not know, opened with another's key.
        let [cipherdir, mp] = a.target.as_slice() else {
            return Err(usage("--key needs CIPHERDIR MOUNTPOINT"));
        };
        let name = match &a.name {
            Some(n) => VolumeName::parse(n).map_err(verr)?,
            None => VolumeName::from_dir(cipherdir).map_err(verr)?,
        };
        let entry = VolumeEntry {
            name,
            cipherdir: canonical(cipherdir),
            mountpoint: None,
            key_deposit: crate::cmd::deposit_name(key)?.as_str().to_owned(),
            key_owner: a.owner.clone(),
            recovery: Vec::new(),
            auto: false,
        };
        return Ok(vec![with_mp(entry, Some(mp.clone()))?]);
    }
    let (entry, mp) = match (a.name.as_deref(), a.target.as_slice()) {
        (Some(n), []) => (table.find(n).map_err(verr)?, None),
        (Some(n), [mp]) => (table.find(n).map_err(verr)?, Some(mp.clone())),
        (None, [what]) => (table.find(&what.to_string_lossy()).map_err(verr)?, None),
        (None, [cipherdir, mp]) => (
            table.find(&cipherdir.to_string_lossy()).map_err(verr)?,
            Some(mp.clone()),
        ),
        _ => {
            return Err(usage(
                "give CIPHERDIR [MOUNTPOINT], a volume name or mount point, --name or --all",
            ));
        }
    };
    Ok(vec![with_mp(entry, mp)?])
}

pub async fn mount(a: MountArgs) -> anyhow::Result<()> {
    let (home, client) = home_and_client(&a.table)?;
    let table = table_of(&home, &a.table);
    let targets = resolve(&a, &table)?;
    if a.foreground {
        let [t] = <[Target; 1]>::try_from(targets)
            .map_err(|_| usage("--foreground serves exactly one volume"))?;
        return serve(t, &a, &home, client, &table).await;
    }
    let json = a.table.client.json;
    if targets.is_empty() && !json {
        eprintln!("No volume to mount.");
    }
    let mut failed = None;
    let mut report = Vec::new();
    for t in targets {
        let (name, mountpoint) = (t.entry.name.to_string(), t.mountpoint.clone());
        if let Some(mp) = mounts::mounted_at(&table.volumes_dir(), &t.entry.name) {
            if !json {
                eprintln!(
                    "Volume {} is mounted at {} already.",
                    t.entry.name,
                    mp.display()
                );
            }
            report.push(
                serde_json::json!({"volume": name, "mountpoint": mp, "state": "already_mounted"}),
            );
            continue;
        }
        match launch(&t, &a, &home, &table) {
            Ok(()) => {
                if !json {
                    println!("Mounted volume {name} at {}.", mountpoint.display());
                }
                report.push(serde_json::json!({"volume": name, "mountpoint": mountpoint, "state": "mounted"}));
            }
            Err(e) => {
                eprintln!("keysafe: volume {name}: {}", crate::exit::render(&e));
                report.push(serde_json::json!({"volume": name, "mountpoint": mountpoint, "state": "failed"}));
                failed = Some(e);
            }
        }
    }
    if json {
        crate::output::json(&report)?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Starts a background `mount --foreground --notify-ready` and waits until it says `ready`
/// (or exits, in which case its error from the log is the error here).
fn launch(t: &Target, a: &MountArgs, home: &ClientHome, table: &VolumeTable) -> anyhow::Result<()> {
    let dir = table.ensure_volumes_dir().map_err(verr)?;
    let log_path = dir.join(format!("{}.log", t.entry.name));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let start = log.seek(std::io::SeekFrom::End(0)).unwrap_or(0);
    let mut c = Command::new(std::env::current_exe().context("cannot find this executable")?);
    c.args([
        "volume",
        "mount",
        "--foreground",
        "--notify-ready",
        "--home",
    ])
    .arg(&home.dir)
    .arg("--table")
    .arg(table.path())
    .arg("--name")
    .arg(t.entry.name.as_str());
    if a.read_only {
        c.arg("--read-only");
    }
    if let Some(k) = &a.key {
        c.arg("--key").arg(k);
    }
    if let Some(o) = &a.owner {
        c.arg("--owner").arg(o);
    }
    if a.key.is_some() {
        c.arg(&t.entry.cipherdir);
    }
    c.arg(&t.mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone().context("log file")?)
        // Its own process group: a Ctrl-C meant for this command does not unmount the volume.
        .process_group(0);
    let mut child = c.spawn().context("cannot start the mount process")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut ready = false;
    for line in std::io::BufReader::new(stdout).lines() {
        match line {
            Ok(l) if l.trim() == "ready" => {
                ready = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if ready {
        return Ok(());
    }
    let status = child.wait().context("mount process")?;
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(&log_path)
        && f.seek(std::io::SeekFrom::Start(start)).is_ok()
    {
        let _ = f.read_to_string(&mut text);
    }
    let last = text
        .lines()
        .rev()
        .find(|l| l.starts_with("keysafe: "))
        .map(|l| l.trim_start_matches("keysafe: ").to_owned())
        .unwrap_or_else(|| {
            format!(
                "the mount process failed ({status}); see {}",
                log_path.display()
            )
        });
    eprintln!("keysafe: {last}");
    std::process::exit(status.code().unwrap_or(1));
}

/// Tells systemd (Type=notify) the volume is mounted.
fn sd_notify_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_bytes();
    let r = match bytes.strip_prefix(b"@") {
        Some(abs) => SocketAddr::from_abstract_name(abs)
            .and_then(|addr| sock.send_to_addr(b"READY=1", &addr)),
        None => sock.send_to(b"READY=1", &path),
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

async fn serve(
    t: Target,
    a: &MountArgs,
    home: &ClientHome,
    client: keysafe_client::KeysafeClient,
    table: &VolumeTable,
) -> anyhow::Result<()> {
    crate::logging::init(crate::logging::Format::Text, "info");
    let name = t.entry.name.clone();
    if let Some(m) = mounts::is_mount_point(&t.mountpoint)
        && m.fstype.starts_with("fuse")
    {
        let hint = if m.source == mounts::source_of(&name)
            && mounts::mounted_at(&table.volumes_dir(), &name).is_none()
        {
            format!(
                "; its serving process is gone: run `keysafe volume umount {}` first",
                t.mountpoint.display()
            )
        } else {
            String::new()
        };
        return Err(verr(VolumeError::Conflict(format!(
            "{} is a mount point already ({} {}){hint}",
            t.mountpoint.display(),
            m.fstype,
            m.source
        ))));
    }
    if !t.mountpoint.is_dir() {
        return Err(usage(format!(
            "mount point {} is not a directory",
            t.mountpoint.display()
        )));
    }
    if let Some(mp) = mounts::mounted_at(&table.volumes_dir(), &name) {
        return Err(verr(VolumeError::Conflict(format!(
            "volume {name} is mounted at {} already",
            mp.display()
        ))));
    }
    // One serving process per volume of this table, even when two mounts race.
    let dir = table.ensure_volumes_dir().map_err(verr)?;
    let lock_path = dir.join(format!("{name}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(verr(VolumeError::Conflict(format!(
            "volume {name} is being mounted by another process"
        ))));
    }
    raise_open_file_limit();
    let vault = vault_for(home, client)?;
    let opened = manage::open(&vault, &t.entry).await.map_err(verr)?;
    warn_stale(&format!("volume {name}"), &opened.source);
    let gate = RuleGate::new(
        name.as_str(),
        manage::rules_path(table, &name),
        opened.rules_key,
    )
    .map_err(verr)?;
    let fs = VolumeFs::new(&t.entry.cipherdir, opened.keys, Arc::new(gate))
        .with_context(|| format!("cannot open {}", t.entry.cipherdir.display()))?;
    let cfg = MountConfig {
        fs_name: mounts::source_of(&name),
        read_only: a.read_only,
        ..MountConfig::default()
    };
    let mut session = keysafe_volume::fs::session(fs, &t.mountpoint, &cfg)
        .with_context(|| format!("cannot mount at {}", t.mountpoint.display()))?;
    let mut unmounter = session.unmount_callable();
    let state = RunState {
        pid: std::process::id(),
        name: name.clone(),
        cipherdir: t.entry.cipherdir.clone(),
        mountpoint: t.mountpoint.clone(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    if let Err(e) = state.write(&dir) {
        tracing::warn!(error = %e, "cannot record the mount");
    }
    tracing::info!(
        volume = %name,
        mountpoint = %t.mountpoint.display(),
        cipherdir = %t.entry.cipherdir.display(),
        "mounted"
    );
    if a.notify_ready {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    sd_notify_ready();
    let signals = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                // A closed terminal must not take the volume away; rules reload on their own.
                _ = hup.recv() => tracing::info!("SIGHUP ignored"),
            }
        }
        tracing::info!("unmounting on a signal");
        if let Err(e) = unmounter.unmount() {
            tracing::warn!(error = %e, "cannot unmount (busy?)");
        }
    });
    let r = tokio::task::spawn_blocking(move || session.run()).await;
    signals.abort();
    RunState::remove(&dir, &name);
    tracing::info!(volume = %name, "unmounted");
    drop(lock);
    r.context("the file system thread failed")?
        .context("the FUSE session ended with an error")
}

/// Every open file of the clear view holds a backing descriptor: allow as many as the hard
/// limit does (gocryptfs does the same).
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            tracing::debug!(error = %e, "cannot raise the open file limit");
        }
    }
}

fn fusermount_u(mp: &Path) -> anyhow::Result<()> {
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(mp)
        .output()
        .context("cannot run fusermount3 (Debian package fuse3)")?;
    if out.status.success() {
        return Ok(());
    }
    Err(verr(VolumeError::Tool(format!(
        "cannot unmount {}: {}",
        mp.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))))
}

pub async fn umount(a: UmountArgs) -> anyhow::Result<()> {
    let (home, _client) = home_and_client(&a.table)?;
    let table = table_of(&home, &a.table);
    let dir = table.volumes_dir();
    let entries = table.load().map_err(verr)?;
    let mut targets: Vec<(Option<VolumeName>, PathBuf)> = Vec::new();
    if a.all {
        for e in &entries {
            if let Some(mp) = mounts::mounted_at(&dir, &e.name) {
                targets.push((Some(e.name.clone()), mp));
            }
        }
    } else {
        let what = a
            .target
            .as_ref()
            .ok_or_else(|| usage("give a mount point or volume name, or --all"))?;
        let by_name = VolumeName::parse(&what.to_string_lossy())
            .ok()
            .filter(|n| entries.iter().any(|e| &e.name == n));
        match by_name {
            Some(n) => {
                let mp = mounts::mounted_at(&dir, &n).ok_or_else(|| {
                    verr(VolumeError::NotFound(format!("volume {n} is not mounted")))
                })?;
                targets.push((Some(n), mp));
            }
            None => {
                let mp = canonical(what);
                let m = mounts::is_mount_point(&mp).ok_or_else(|| {
                    verr(VolumeError::NotFound(format!(
                        "nothing is mounted at {}",
                        mp.display()
                    )))
                })?;
                if !m.fstype.starts_with("fuse") || !m.source.starts_with("keysafe:") {
                    return Err(verr(VolumeError::Invalid(format!(
                        "{} is not a keysafe volume ({})",
                        mp.display(),
                        m.fstype
                    ))));
                }
                let name = m
                    .source
                    .strip_prefix("keysafe:")
                    .and_then(|n| VolumeName::parse(n).ok());
                targets.push((name, mp));
            }
        }
    }
    let mut unmounted = Vec::new();
    for (name, mp) in targets {
        let state = name.as_ref().and_then(|n| RunState::read(&dir, n));
        fusermount_u(&mp)?;
        // Wait for the serving process to finish, so a following mount finds it gone.
        if let Some(s) = state {
            for _ in 0..200 {
                if !s.alive() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !s.alive() {
                RunState::remove(&dir, &s.name);
            }
        }
        if !a.table.client.json {
            println!("Unmounted {}.", mp.display());
        }
        unmounted
            .push(serde_json::json!({"volume": name.map(|n| n.to_string()), "mountpoint": mp}));
    }
    if a.table.client.json {
        crate::output::json(&unmounted)?;
    }
    Ok(())
}
