//! `keysafe kms`: the gateway binary against a TestServer.

use crate::{fails_with, keysafe, run};
use keysafe_testkit::TestServer;
use std::io::{Read, Write};
use std::time::Duration;

/// One plain HTTP/1.1 request; returns the whole response text.
fn http(port: u16, req: &str) -> Option<String> {
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
        "audit_log = \"audit/kms-audit.log\"\n[cache]\ncurrent_key_timeout = \"5s\"\n",
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
