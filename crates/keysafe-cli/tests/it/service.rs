//! Running keysafe as a service: systemd readiness, watchdog, reload and stop notifications
//! from `keysafe serve`; the TLS certificate renewed with `admin tls renew` and reloaded by a
//! running server on SIGHUP and on a change of the files; pinning advice that a man in the
//! middle cannot answer.

use crate::{Serve, anonymous_client, fails_with, free_port, keysafe, ok, run, wait_healthy};
use keysafe_proto::identity::inspect_certificate;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `keysafe init` into `dir` on a free port; returns the printed summary and the address.
async fn init(tmp: &Path, dir: &Path) -> (String, SocketAddr) {
    let port = free_port("127.0.0.1");
    let mut c = keysafe(tmp);
    c.args(["init", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let out = ok(&run(c).await);
    (out, format!("127.0.0.1:{port}").parse().unwrap())
}

fn set_config(dir: &Path, from: &str, to: &str) {
    let p = dir.join("keysafe.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    std::fs::write(&p, text.replace(from, to)).unwrap();
}

fn serve(tmp: &Path, dir: &Path, env: &[(&str, &str)]) -> Serve {
    let mut c = keysafe(tmp);
    c.args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.join("serve.log")).unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    Serve(Some(c.spawn().unwrap()))
}

async fn names_presented(addr: SocketAddr) -> Vec<String> {
    let chain = keysafe_testkit::peek::presented(addr).await;
    inspect_certificate(&chain[0]).unwrap().subject_alt_names
}

/// Waits (up to `limit`) until the server presents a certificate naming `name`.
async fn wait_for_name(addr: SocketAddr, name: &str, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let names = names_presented(addr).await;
        if names.iter().any(|n| n == name) || start.elapsed() > limit {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn renew(tmp: &Path, dir: &Path, names: &[&str]) -> std::process::Command {
    let mut c = keysafe(tmp);
    c.args(["admin", "--data-dir"])
        .arg(dir)
        .args(["tls", "renew", "--json"]);
    for n in names {
        c.args(["--hostname", n]);
    }
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_renew_keeps_the_fingerprint_and_a_running_server_reloads_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("data");
    let (_, addr) = init(t, &dir).await;
    // Only SIGHUP reloads here; the file watch has its own test.
    set_config(
        &dir,
        "tls_reload_interval = \"10s\"",
        "tls_reload_interval = \"0s\"",
    );
    let cert = dir.join("tls/server.crt");
    let before = inspect_certificate(&keysafe_client::home::load_ca(&cert).unwrap()[0]).unwrap();
    // Generated server certificates are valid for a year, not for centuries.
    assert!(
        (before.not_after - before.not_before - 365 * 86400 - 3600).abs() < 60,
        "{before:?}"
    );
    let server = serve(t, &dir, &[]);
    wait_healthy(&format!("https://{addr}")).await;
    assert_eq!(names_presented(addr).await, ["localhost", "127.0.0.1"]);

    let mode_before = std::fs::metadata(&cert).unwrap().permissions();
    let out = ok(&run(renew(
        t,
        &dir,
        &["ks1.example.com", "10.0.0.5", "ks1.example.com"],
    ))
    .await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["fingerprint"], before.fingerprint.as_str());
    assert_eq!(
        v["names"],
        serde_json::json!(["ks1.example.com", "10.0.0.5"])
    );
    let after = inspect_certificate(&keysafe_client::home::load_ca(&cert).unwrap()[0]).unwrap();
    assert_eq!(after.fingerprint, before.fingerprint);
    assert_eq!(after.common_name.as_deref(), Some("ks1.example.com"));
    assert!(after.not_after > before.not_after - 5);
    assert_eq!(std::fs::metadata(&cert).unwrap().permissions(), mode_before);
    // The running server still presents the old one until told.
    assert_eq!(names_presented(addr).await, ["localhost", "127.0.0.1"]);
    server.signal("-HUP");
    let names = wait_for_name(addr, "ks1.example.com", Duration::from_secs(30)).await;
    assert_eq!(names, ["ks1.example.com", "10.0.0.5"]);
    // Without --hostname the names of the current certificate are kept.
    let v: serde_json::Value = serde_json::from_str(&ok(&run(renew(t, &dir, &[])).await)).unwrap();
    assert_eq!(
        v["names"],
        serde_json::json!(["ks1.example.com", "10.0.0.5"])
    );
    // The server is still up after the signal (SIGHUP does not end it).
    wait_healthy(&format!("https://{addr}")).await;

    // Bad input changes nothing.
    let pem = std::fs::read(&cert).unwrap();
    fails_with(&run(renew(t, &dir, &["bad name"])).await, 2);
    let mut c = keysafe(t);
    c.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["tls", "renew", "--validity", "1h"]);
    fails_with(&run(c).await, 2);
    let mut c = keysafe(t);
    c.args(["admin", "tls", "renew"]);
    fails_with(&run(c).await, 2);
    assert_eq!(std::fs::read(&cert).unwrap(), pem);
    server.signal("-TERM");
    let out = server.wait_with_output_async().await;
    assert!(out.status.success(), "{out:?}");
    let log = std::fs::read_to_string(t.join("serve.log")).unwrap();
    assert!(
        log.contains("TLS certificate reloaded (same key, same fingerprint)"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_server_reloads_changed_files_and_renew_refuses_a_ca_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("data");
    let (_, addr) = init(t, &dir).await;
    set_config(
        &dir,
        "tls_reload_interval = \"10s\"",
        "tls_reload_interval = \"1s\"",
    );
    let server = serve(t, &dir, &[]);
    wait_healthy(&format!("https://{addr}")).await;
    ok(&run(renew(t, &dir, &["watched.example.com", "127.0.0.1"])).await);
    let names = wait_for_name(addr, "watched.example.com", Duration::from_secs(30)).await;
    assert_eq!(names, ["watched.example.com", "127.0.0.1"]);

    // A CA-issued certificate for the same key: renew refuses to replace it with a self-signed one.
    let key_pem = std::fs::read_to_string(dir.join("tls/server.key")).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Test CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "ca-issued");
    let leaf = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(
        dir.join("tls/server.crt"),
        format!("{}{}", leaf.pem(), issuer.pem()),
    )
    .unwrap();
    let err = fails_with(&run(renew(t, &dir, &[])).await, 1);
    assert!(err.contains("issued by a CA"), "{err}");
    // The server, watching, serves the CA-issued chain (same key: taken without being allowed).
    let start = Instant::now();
    loop {
        let chain = keysafe_testkit::peek::presented(addr).await;
        if chain.len() == 2 || start.elapsed() > Duration::from_secs(30) {
            assert_eq!(chain.len(), 2);
            assert!(!inspect_certificate(&chain[0]).unwrap().self_signed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);
}

/// Receives datagrams until one contains `want` (or fails after a minute).
fn expect(sock: &UnixDatagram, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == want) {
                    return msg;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no {want} from keysafe serve");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_tells_systemd_it_is_ready_alive_reloading_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("data");
    let (_, addr) = init(t, &dir).await;
    // At debug level the server says what start-up memory it handed back before READY.
    set_config(&dir, "\nlevel = \"info\"", "\nlevel = \"debug\"");
    let path = t.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let server = serve(
        t,
        &dir,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let ready = tokio::task::block_in_place(|| expect(&sock, "READY=1"));
    // Start-up memory was handed back before READY (the line is written before it is sent).
    let log = std::fs::read_to_string(t.join("serve.log")).unwrap();
    let released = log
        .lines()
        .find(|l| l.contains("unmapped the code and read-only data start-up touched"))
        .unwrap_or_else(|| panic!("no release of start-up memory logged before READY: {log}"));
    assert!(
        !released.contains("mappings=0") && !released.contains("file_kb=0"),
        "{released}"
    );
    assert!(
        ready.contains(&format!("STATUS=serving https://{addr}")),
        "{ready}"
    );
    // Ready means bound and open: the very first request is answered.
    let c = anonymous_client(&format!("https://{addr}"));
    assert_eq!(c.health().await.unwrap().status, "ok");
    // The watchdog is pinged (at half of WATCHDOG_USEC).
    tokio::task::block_in_place(|| expect(&sock, "WATCHDOG=1"));
    tokio::task::block_in_place(|| expect(&sock, "WATCHDOG=1"));
    server.signal("-HUP");
    let reloading = tokio::task::block_in_place(|| expect(&sock, "RELOADING=1"));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    tokio::task::block_in_place(|| expect(&sock, "READY=1"));
    server.signal("-TERM");
    tokio::task::block_in_place(|| expect(&sock, "STOPPING=1"));
    let out = server.wait_with_output_async().await;
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pinning_advice_points_to_a_check_a_man_in_the_middle_cannot_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("data");
    let (summary, addr) = init(t, &dir).await;
    // init prints the fingerprint and the OpenSSL command that computes it from the file...
    let fp_line = summary
        .lines()
        .find(|l| l.starts_with("Server fingerprint: "))
        .unwrap();
    let fp = fp_line
        .trim_start_matches("Server fingerprint: ")
        .trim()
        .to_owned();
    let cmd_line = summary
        .lines()
        .find(|l| l.contains("openssl x509"))
        .unwrap();
    let cmd = &cmd_line[cmd_line.find("openssl x509").unwrap()..];
    // ... and that command really prints it.
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.trim_end().ends_with(&fp), "{printed} vs {fp}");

    // register (trust on first use) points there, not at the server it is talking to.
    let server = serve(t, &dir, &[]);
    wait_healthy(&format!("https://{addr}")).await;
    let mut c = keysafe(t);
    c.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["org", "add", "acme", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&run(c).await)).unwrap();
    std::fs::write(t.join("secret"), v["auth_secret"].as_str().unwrap()).unwrap();
    let mut c = keysafe(t);
    c.args([
        "register",
        "--server",
        &format!("https://{addr}"),
        "--org",
        "acme",
        "--auth-file",
    ])
    .arg(t.join("secret"))
    .arg("--home")
    .arg(t.join("home"));
    let out = run(c).await;
    ok(&out);
    let advice = String::from_utf8_lossy(&out.stderr);
    assert!(
        advice.contains(&format!("Pinned the server fingerprint on first use: {fp}")),
        "{advice}"
    );
    assert!(
        advice.contains("openssl x509 -in DATA_DIR/tls/server.crt"),
        "{advice}"
    );
    assert!(!advice.contains("?a=fingerprint"), "{advice}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_server_logs_its_state_once_not_per_health_probe() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("data");
    let port = free_port("127.0.0.1");
    let pass = t.join("pass");
    std::fs::write(&pass, "correct horse battery staple 42").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut c = keysafe(t);
    c.args(["init", "--data-dir"])
        .arg(&dir)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--seal",
            "passphrase",
        ])
        .arg("--passphrase-file")
        .arg(&pass);
    ok(&run(c).await);
    // No passphrase this time: it starts sealed.
    let server = serve(t, &dir, &[("KEYSAFE_LOG", "info")]);
    let url = format!("https://127.0.0.1:{port}");
    let anon = anonymous_client(&url);
    let mut sealed = 0;
    for _ in 0..300 {
        match anon.health().await {
            Ok(h) if h.status == "sealed" => {
                sealed += 1;
                if sealed == 25 {
                    break;
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(sealed, 25);
    server.signal("-TERM");
    server.wait_with_output_async().await;
    let log = std::fs::read_to_string(t.join("serve.log")).unwrap();
    assert_eq!(log.matches("health: not ready").count(), 1, "{log}");
    assert!(!log.contains("request failed"), "{log}");
}

/// Runs a server with `KEYSAFE_LOG=filter` and JSON logs, makes a few requests, and returns the
/// targets of its debug lines.
async fn debug_targets(filter: &str) -> BTreeSet<String> {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("data");
    let (_, addr) = init(t, &dir).await;
    set_config(&dir, "format = \"text\"", "format = \"json\"");
    let server = serve(t, &dir, &[("KEYSAFE_LOG", filter)]);
    let url = format!("https://{addr}");
    wait_healthy(&url).await;
    let mut c = keysafe(t);
    c.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["org", "list"]);
    ok(&run(c).await);
    server.signal("-TERM");
    server.wait_with_output_async().await;
    std::fs::read_to_string(t.join("serve.log"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "DEBUG")
        .map(|v| v["target"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_debug_filter_shows_keysafe_without_the_libraries() {
    // What the documentation recommends: keysafe's own debug lines, libraries at info.
    let ours = debug_targets("info,keysafe=debug").await;
    assert!(!ours.is_empty());
    assert!(ours.iter().all(|t| t.starts_with("keysafe")), "{ours:?}");
    // What it replaces: plain `debug` lets the libraries in (TLS, HTTP, database).
    let all = debug_targets("debug").await;
    assert!(all.iter().any(|t| !t.starts_with("keysafe")), "{all:?}");
}

/// Runs a server with `format` logs at `info`, sends one refused request with a request id of
/// its own, and returns the log.
async fn log_of_a_refused_request(format: &str, id: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("data");
    let (_, addr) = init(t, &dir).await;
    set_config(&dir, "format = \"text\"", &format!("format = \"{format}\""));
    let server = serve(t, &dir, &[("KEYSAFE_LOG", "info")]);
    let url = format!("https://{addr}");
    wait_healthy(&url).await;
    let anon = anonymous_client(&url);
    let r = anon
        .raw_request(keysafe_client::reqwest::Method::GET, "/v1/deposits/k")
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    server.signal("-TERM");
    server.wait_with_output_async().await;
    std::fs::read_to_string(t.join("serve.log")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_name_their_request_in_text_and_json() {
    let log = log_of_a_refused_request("text", "text-1").await;
    let line = log
        .lines()
        .find(|l| l.contains("request refused"))
        .unwrap_or_else(|| panic!("no refusal logged: {log}"));
    assert!(
        line.contains(" INFO request{id=text-1 client=- remote=127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("status=401"), "{line}");
    // A line a handler logs (the health route's first answer) names its request too; lines
    // outside a request name none.
    let of = |text: &str| log.lines().find(|l| l.contains(text)).unwrap_or_default();
    assert!(of("health: ready").contains(" INFO request{id="), "{log}");
    assert!(!of("keysafe is serving").is_empty(), "{log}");
    assert!(!of("keysafe is serving").contains("request{"), "{log}");
    assert!(!of("SIGTERM received").contains("request{"), "{log}");

    let log = log_of_a_refused_request("json", "json-1").await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let refusal = lines
        .iter()
        .find(|v| v["message"] == "request refused")
        .unwrap_or_else(|| panic!("no refusal logged: {log}"));
    assert_eq!(refusal["level"], "INFO");
    assert_eq!(refusal["status"], 401);
    for span in [&refusal["span"], &refusal["spans"][0]] {
        assert_eq!(span["name"], "request", "{refusal}");
        assert_eq!(span["id"], "json-1", "{refusal}");
        assert_eq!(span["client"], "-", "{refusal}");
        assert!(
            span["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{refusal}"
        );
    }
    let of = |text: &str| lines.iter().find(|v| v["message"] == text).unwrap();
    assert_eq!(of("health: ready")["span"]["name"], "request", "{log}");
    assert!(of("keysafe is serving").get("span").is_none(), "{log}");
    assert!(of("SIGTERM received").get("span").is_none(), "{log}");
}
