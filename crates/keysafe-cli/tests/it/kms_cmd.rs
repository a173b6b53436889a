//! `keysafe kms`: the gateway binary against a TestServer.

use crate::{fails_with, keysafe, run};
use keysafe_testkit::TestServer;
use std::io::{Read, Write};
use std::time::Duration;

/// One plain HTTP/1.1 request to 127.0.0.1:`port`; returns the whole response text.
pub(crate) fn http(port: u16, req: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn kms_serves_hadoop_kms_as_the_registered_client() {
    let ts = TestServer::start().await;
    let client = ts.new_client("hadoop").await;
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = tmp.path().join("kms.toml");
    std::fs::write(
        &cfg,
        "audit_log = \"audit/kms-audit.log\"\nkey_admins = \"alice\"\n[cache]\ncurrent_key_timeout = \"5s\"\n",
    )
    .unwrap();
    std::fs::create_dir(tmp.path().join("audit")).unwrap();
    let mut c = keysafe(tmp.path());
    c.args(["kms", "--home"])
        .arg(client.home_dir())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _child = Child(c.spawn().unwrap());
    let mut cookie = None;
    for _ in 0..100 {
        let r = tokio::task::spawn_blocking(move || {
            http(port, "OPTIONS /kms/v1/keys/names?user.name=alice HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        })
        .await
        .unwrap();
        if let Some(r) = r {
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            let line = r
                .lines()
                .find(|l| {
                    l.to_ascii_lowercase()
                        .starts_with("set-cookie: hadoop.auth=\"")
                })
                .unwrap();
            cookie = Some(
                line["set-cookie: ".len()..]
                    .split(';')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cookie = cookie.expect("the gateway never answered");
    // Without credentials: 401 with Hadoop's reason phrase and the PseudoAuth challenge.
    let r = tokio::task::spawn_blocking(move || {
        http(
            port,
            "GET /kms/v1/keys/names HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        r.starts_with("HTTP/1.1 401 Authentication required\r\n"),
        "{r}"
    );
    assert!(
        r.to_ascii_lowercase()
            .contains("www-authenticate: pseudoauth"),
        "{r}"
    );
    let body = r#"{"name":"k1","cipher":"AES/CTR/NoPadding","length":128}"#;
    let req = format!(
        "POST /kms/v1/keys HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = tokio::task::spawn_blocking(move || http(port, &req))
        .await
        .unwrap()
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    assert!(r.contains("\"versionName\":\"k1@0\""), "{r}");
    // The key is a deposit of the group the gateway created (group:kms), age-encrypted.
    let list = client
        .client
        .list(&keysafe_proto::api::ListQuery {
            owner: Some("group:kms".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        list.deposits
            .iter()
            .any(|d| d.name.as_str() == "kms/keys/k1")
    );
    // A miss: the gateway drops its cached k1 and reads it from keysafe again.
    for req in [
        format!(
            "POST /kms/v1/key/k1/_invalidatecache HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /kms/v1/key/k1/_currentversion HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        ),
    ] {
        let r = tokio::task::spawn_blocking(move || http(port, &req))
            .await
            .unwrap()
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    // The gateway reads keysafe on every miss and caches with Hadoop's timeouts itself: it
    // leaves nothing in the home's local deposit cache (which would cost a file and two fsyncs
    // per read).
    let home = keysafe_client::ClientHome::load(client.home_dir()).unwrap();
    let cache = home.cache().expect("the home's cache is on by default");
    assert_eq!(cache.entries().unwrap().len(), 0);
    // Audit log where the config file said (relative to the file).
    let log = std::fs::read_to_string(tmp.path().join("audit/kms-audit.log")).unwrap();
    assert!(
        log.contains("OK[op=CREATE_KEY, key=k1, user=alice]"),
        "{log}"
    );
}

#[tokio::test]
async fn kms_refuses_a_bad_config_or_home() {
    let tmp = tempfile::tempdir().unwrap();
    let ts = TestServer::start().await;
    let client = ts.new_client("hadoop").await;
    let cfg = tmp.path().join("kms.toml");
    std::fs::write(&cfg, "no_such_setting = 1\n").unwrap();
    let mut c = keysafe(tmp.path());
    c.args(["kms", "--home"])
        .arg(client.home_dir())
        .arg("--config")
        .arg(&cfg);
    let err = fails_with(&run(c).await, 2);
    assert!(err.contains("kms.toml"), "{err}");
    let mut c = keysafe(tmp.path());
    c.args(["kms", "--home"]).arg(tmp.path().join("missing"));
    fails_with(&run(c).await, 8);
    // A server that is down: exit 6.
    let home = client.home_dir().to_owned();
    let addr = ts.addr;
    drop(ts);
    while std::net::TcpStream::connect(addr).is_ok() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = keysafe(tmp.path());
    c.args(["kms", "--home"]).arg(&home);
    fails_with(&run(c).await, 6);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `port` answers `req` (the gateway started).
async fn wait_for(port: u16, req: &'static str) -> String {
    for _ in 0..200 {
        if let Some(r) = tokio::task::spawn_blocking(move || http(port, req))
            .await
            .unwrap()
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing answered on {port}");
}

async fn get(port: u16, req: String) -> String {
    tokio::task::spawn_blocking(move || http(port, &req))
        .await
        .unwrap()
        .unwrap()
}

/// Pseudo authentication on an address others can reach is refused before anything starts,
/// unless allowed by name.
#[tokio::test]
async fn kms_refuses_pseudo_authentication_on_a_network_address() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = keysafe(tmp.path());
    c.args(["kms", "--home"])
        .arg(tmp.path().join("unused"))
        .args(["--listen", "0.0.0.0:0"]);
    let err = fails_with(&run(c).await, 2);
    assert!(
        err.contains("refusing to serve pseudo authentication on 0.0.0.0:0"),
        "{err}"
    );
    assert!(err.contains("insecure_pseudo_on_network"), "{err}");
}

/// Operating the gateway: JSON logs, health and metrics on the local listener, SIGHUP reopens
/// the audit log (log rotation) created 0600, and a broken ACL file is reported once per
/// change, not every second.
#[tokio::test]
async fn kms_logs_json_serves_health_and_metrics_and_reopens_its_audit_log_on_sighup() {
    let ts = TestServer::start().await;
    let client = ts.new_client("hadoop").await;
    let tmp = tempfile::tempdir().unwrap();
    let (port, mport) = (free_port(), free_port());
    let acls = tmp.path().join("kms-acls.xml");
    std::fs::write(
        &acls,
        "<configuration><property><name>hadoop.kms.acl.GET_KEYS</name><value>alice</value></property></configuration>",
    )
    .unwrap();
    let cfg = tmp.path().join("kms.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{mport}\"\nlog_format = \"json\"\nacl_file = \"kms-acls.xml\"\naudit_log = \"kms-audit.log\"\n"
        ),
    )
    .unwrap();
    let stderr = std::fs::File::create(tmp.path().join("stderr.log")).unwrap();
    let mut c = keysafe(tmp.path());
    c.args(["kms", "--home"])
        .arg(client.home_dir())
        .arg("--config")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    let child = Child(c.spawn().unwrap());
    let pid = child.0.id().to_string();
    wait_for(
        port,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let names =
        "GET /kms/v1/keys/names?user.name=alice HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert!(get(port, names.into()).await.starts_with("HTTP/1.1 200"));

    // Health and metrics on the local listener.
    let h = get(
        mport,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(h.contains("\"acl_file_ok\":true"), "{h}");
    let m = get(
        mport,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(
        m.contains("keysafe_kms_requests_total{op=\"get_keys\",status=\"2xx\"} 1"),
        "{m}"
    );

    // Rotation: move the log away, SIGHUP, the next line goes to a new 0600 file.
    let log = tmp.path().join("kms-audit.log");
    std::fs::rename(&log, tmp.path().join("kms-audit.log.1")).unwrap();
    let k = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(k.success());
    let mut reopened = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if log.exists() {
            reopened = true;
            break;
        }
    }
    assert!(reopened, "SIGHUP did not reopen the audit log");
    let bob = names.replace("alice", "bob");
    assert!(get(port, bob).await.starts_with("HTTP/1.1 403"));
    let new = std::fs::read_to_string(&log).unwrap();
    assert!(new.contains("UNAUTHORIZED[op=GET_KEYS, user=bob]"), "{new}");
    let old = std::fs::read_to_string(tmp.path().join("kms-audit.log.1")).unwrap();
    assert!(
        old.contains("OK[op=GET_KEYS, user=alice]") && !old.contains("bob"),
        "{old}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A broken ACL file: reported once, the previous ACLs stay (alice still allowed).
    std::fs::write(&acls, "<configuration>").unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(get(port, names.into()).await.starts_with("HTTP/1.1 200"));
    let h = get(
        mport,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(h.contains("\"acl_file_ok\":false"), "{h}");
    drop(child);
    let err = std::fs::read_to_string(tmp.path().join("stderr.log")).unwrap();
    assert_eq!(
        err.matches("cannot reload KMS ACLs").count(),
        1,
        "reported once per change:\n{err}"
    );
    // Every log line is a JSON object.
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    assert!(err.contains("SIGHUP: reopened the audit log"), "{err}");
}
