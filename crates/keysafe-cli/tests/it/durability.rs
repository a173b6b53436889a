//! Key and configuration files survive a crash right after they were written: every one is
//! followed by an fsync of the directory that names it (a synced file whose directory entry was
//! never written is lost by a power cut just the same). Checked on the real binary's system
//! calls, traced with strace: `init` (the root key, `keysafe.toml`, the TLS key and certificate,
//! the administrator's client key, age identity, token and configuration) and a seal migration
//! (the renamed `keysafe.toml`).

use crate::{keysafe, ok};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cmd` under `strace -f` and returns the trace, one system call per line.
fn traced(cmd: Command, log: &Path) -> (std::process::Output, Vec<String>) {
    let mut st = Command::new("strace");
    st.args([
        "-f",
        "-qq",
        "-e",
        "trace=openat,open,creat,rename,renameat,renameat2,fsync,fdatasync",
    ])
    .arg("-o")
    .arg(log)
    .arg(cmd.get_program())
    .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => st.env(k, v),
            None => st.env_remove(k),
        };
    }
    st.stdin(std::process::Stdio::null());
    let out = st
        .output()
        .expect("strace must be installed (apt-get install strace)");
    let text = std::fs::read_to_string(log).unwrap();
    (out, text.lines().map(str::to_owned).collect())
}

/// The quoted paths of one trace line.
fn paths(line: &str) -> Vec<String> {
    line.split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, p)| p.to_owned())
        .collect()
}

/// The file descriptor a line returned (`... = 7`).
fn returned_fd(line: &str) -> Option<i64> {
    line.rsplit_once(" = ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .filter(|fd: &i64| *fd >= 0)
}

/// For every file of `files`: the line where it was last created or renamed into place, and
/// whether an fsync of its directory follows that line.
fn check(trace: &[String], files: &[PathBuf]) -> Vec<String> {
    // Which path each descriptor named, line by line (descriptors are reused).
    let mut fd_path: HashMap<i64, String> = HashMap::new();
    let mut synced_dirs: Vec<(usize, String)> = Vec::new();
    let mut made: HashMap<String, usize> = HashMap::new();
    for (n, line) in trace.iter().enumerate() {
        let call = line
            .split_once(' ')
            .map_or(line.as_str(), |(_, rest)| rest.trim_start());
        if call.starts_with("openat(") || call.starts_with("open(") || call.starts_with("creat(") {
            if let (Some(p), Some(fd)) = (paths(call).pop(), returned_fd(call)) {
                if call.contains("O_CREAT") {
                    made.insert(p.clone(), n);
                }
                fd_path.insert(fd, p);
            }
        } else if call.starts_with("rename")
            && call.contains(" = 0")
            && let Some(to) = paths(call).pop()
        {
            made.insert(to, n);
        } else if call.starts_with("fsync(") || call.starts_with("fdatasync(") {
            let fd: Option<i64> = call.split(['(', ')']).nth(1).and_then(|f| f.parse().ok());
            if let Some(p) = fd.and_then(|fd| fd_path.get(&fd)) {
                synced_dirs.push((n, p.clone()));
            }
        }
    }
    let mut missing = Vec::new();
    for f in files {
        let key = f.display().to_string();
        let Some(at) = made.get(&key) else {
            missing.push(format!("{key}: never created in the trace"));
            continue;
        };
        let dir = f.parent().unwrap().display().to_string();
        if !synced_dirs.iter().any(|(n, p)| n > at && *p == dir) {
            missing.push(format!("{key}: its directory {dir} is not synced after it"));
        }
    }
    missing
}

#[test]
fn key_and_configuration_files_are_followed_by_a_sync_of_their_directory() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    let mut c = keysafe(work.path());
    c.args(["init", "--data-dir"]).arg(&dir);
    let (out, trace) = traced(c, &work.path().join("init.trace"));
    ok(&out);
    let admin = dir.join("admin");
    let files: Vec<PathBuf> = [
        "root.key",
        "keysafe.toml",
        "tls/server.key",
        "tls/server.crt",
    ]
    .iter()
    .map(|f| dir.join(f))
    .chain(
        [
            "client.key",
            "client.crt",
            "age.key",
            "token",
            "client.toml",
        ]
        .iter()
        .map(|f| admin.join(f)),
    )
    .collect();
    let missing = check(&trace, &files);
    assert!(missing.is_empty(), "init: {missing:#?}");

    // A seal migration renames keysafe.toml into place.
    let pass = work.path().join("pass");
    std::fs::write(&pass, "a long new passphrase\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut m = keysafe(work.path());
    m.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["seal", "migrate", "--to", "passphrase", "--passphrase-file"])
        .arg(&pass);
    let (out, trace) = traced(m, &work.path().join("migrate.trace"));
    ok(&out);
    let missing = check(&trace, &[dir.join("keysafe.toml")]);
    assert!(missing.is_empty(), "seal migrate: {missing:#?}");
}
