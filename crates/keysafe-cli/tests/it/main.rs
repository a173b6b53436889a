//! CLI tests: the built `keysafe` binary against a real server (a TestServer in this process, or
//! a `keysafe serve` child process).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_cmds;
mod server_cmds;
// Seals, HSM, rotation and backups (issue 5).
mod backup;
mod hsm;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A `keysafe` command with a clean environment: no KEYSAFE_* variables from the caller, and a
/// throwaway HOME so nothing touches the real user's configuration.
pub fn keysafe(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keysafe"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYSAFE_") {
            c.env_remove(k);
        }
    }
    c.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"));
    c.stdin(Stdio::null());
    c
}

/// Runs a command off the async runtime and returns its output.
pub async fn run(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

/// Runs with `input` on stdin.
pub async fn run_with_stdin(mut c: Command, input: Vec<u8>) -> Output {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({:?}): stdout={} stderr={}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
pub fn fails_with(o: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout={} stderr={stderr}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "errors are one line: {stderr}");
    assert!(stderr.starts_with("keysafe: "), "{stderr}");
    stderr
}
