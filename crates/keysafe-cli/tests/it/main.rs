//! CLI tests: the built `keysafe` binary against a real server (a TestServer in this process, or
//! a `keysafe serve` child process).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_cmds;
mod audit_retention;
mod cache;
mod client_cmds;
mod cluster;
mod cluster_failover;
mod crash;
mod durability;
mod edges;
mod failover;
mod json_output;
mod kms_cmd;
mod lifecycle_cmds;
mod packaging;
mod pgaf;
mod postgres;
mod server_cmds;
mod service;
mod shared_dir;
// Encrypted volumes and LUKS disks.
mod luks;
mod volume;
mod volume_acl;
// Seals, HSM, rotation and backups.
mod backup;
mod hsm;
mod seal_crash;

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

/// A `keysafe serve` child that is killed if the test fails before stopping it.
pub struct Serve(pub Option<std::process::Child>);

impl Serve {
    pub fn signal(&self, sig: &str) {
        let pid = self.0.as_ref().unwrap().id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    pub async fn wait_with_output_async(mut self) -> std::process::Output {
        let child = self.0.take().unwrap();
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `keysafe serve` on a free port; returns the child and its URL.
pub fn spawn_serve(home: &Path, dir: &Path, port: Option<u16>) -> (Serve, String) {
    let port = port.unwrap_or_else(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    });
    let mut c = keysafe(home);
    c.args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    (
        Serve(Some(c.spawn().unwrap())),
        format!("https://127.0.0.1:{port}"),
    )
}

/// A client without an identity that trusts the server it first meets.
pub fn anonymous_client(url: &str) -> keysafe_client::KeysafeClient {
    keysafe_client::KeysafeClient::new(
        url,
        None,
        &keysafe_client::ServerTrust::TrustOnFirstUse,
        &Default::default(),
    )
    .unwrap()
}

pub async fn wait_healthy(url: &str) -> keysafe_proto::api::Health {
    let c = anonymous_client(url);
    for _ in 0..300 {
        if let Ok(h) = c.health().await {
            return h;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("server at {url} never became healthy");
}

/// A free TCP port on `ip` (a 127.0.0.x address).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `keysafe serve --data-dir DIR --listen IP:PORT` with its log in `DIR/../serve-IP-PORT.log`
/// (not a pipe, so a chatty server never blocks); returns the child and its URL.
pub fn spawn_serve_at(home: &Path, dir: &Path, ip: &str, port: u16) -> (Serve, String) {
    let log = dir.parent().unwrap().join(format!("serve-{ip}-{port}.log"));
    let mut c = keysafe(home);
    c.args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("{ip}:{port}")])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    (
        Serve(Some(c.spawn().unwrap())),
        format!("https://{ip}:{port}"),
    )
}

impl Serve {
    /// Kills the server outright (SIGKILL: a crash, no graceful goodbye) and reaps it.
    pub fn kill(mut self) {
        if let Some(mut c) = self.0.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}
