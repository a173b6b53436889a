//! Interoperability with the real Hadoop 3.5.0 client jars (KeyShell and the Java harness in
//! interop/hadoop/KmsHarness.java, compiled with javac here).
//!
//! The jars come from `interop/hadoop/setup-client.sh` (`HADOOP_CLIENT_LIB`, else its cache
//! folder). Without them these tests print why and pass, unless `KEYSAFE_REQUIRE_HADOOP=1` (set by
//! `.ci/run`, which fetches the jars first): then missing jars fail the run.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The folder with the Hadoop client jars, or None (after saying why) when absent and allowed.
fn hadoop_lib() -> Option<PathBuf> {
    let lib = std::env::var_os("HADOOP_CLIENT_LIB")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/keysafe/hadoop-client/lib"))
        })
        .unwrap();
    let ok = std::fs::read_dir(&lib)
        .map(|d| {
            d.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("hadoop-client-api-")
            })
        })
        .unwrap_or(false);
    if ok {
        return Some(lib);
    }
    if std::env::var("KEYSAFE_REQUIRE_HADOOP").as_deref() == Ok("1") {
        panic!(
            "Hadoop client jars not found in {} (run interop/hadoop/setup-client.sh)",
            lib.display()
        );
    }
    eprintln!(
        "SKIPPED: Hadoop client jars not found in {}; run interop/hadoop/setup-client.sh",
        lib.display()
    );
    None
}

fn classpath(lib: &Path, extra: Option<&Path>) -> String {
    let mut cp = format!("{}/*", lib.display());
    if let Some(e) = extra {
        cp.push(':');
        cp.push_str(&e.display().to_string());
    }
    cp
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

async fn java(lib: &Path, extra: Option<&Path>, user: &str, args: &[&str]) -> Out {
    let o = tokio::process::Command::new("java")
        .arg("-cp")
        .arg(classpath(lib, extra))
        .args(args)
        .env("HADOOP_USER_NAME", user)
        .env_remove("HADOOP_CONF_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("java");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

async fn keyshell(lib: &Path, user: &str, provider: &str, args: &[&str]) -> Out {
    let mut a = vec!["org.apache.hadoop.crypto.key.KeyShell"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-provider", provider]);
    java(lib, None, user, &a).await
}

/// Compiles interop/hadoop/KmsHarness.java once per test run.
fn harness_classes(lib: &Path) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let src = repo_root().join("interop/hadoop/KmsHarness.java");
        let o = std::process::Command::new("javac")
            .arg("-nowarn")
            .arg("-cp")
            .arg(classpath(lib, None))
            .arg("-d")
            .arg(&dir)
            .arg(&src)
            .output()
            .expect("javac");
        assert!(
            o.status.success(),
            "javac failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        dir
    })
    .clone()
}

async fn harness(lib: &Path, user: &str, args: &[&str]) -> Out {
    let classes = harness_classes(lib);
    let mut a = vec!["KmsHarness"];
    a.extend_from_slice(args);
    java(lib, Some(&classes), user, &a).await
}

fn provider(gw: &Gw) -> String {
    format!("kms://http@{}:{}/kms", gw.addr.ip(), gw.addr.port())
}

#[tokio::test]
async fn keyshell_create_list_roll_delete() {
    let Some(lib) = hadoop_lib() else { return };
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |_, _| {}).await;
    let p = provider(&gw);

    let o = keyshell(
        &lib,
        "alice",
        &p,
        &[
            "create",
            "k1",
            "-size",
            "256",
            "-description",
            "hello",
            "-attr",
            "a=1",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("k1 has been successfully created"),
        "{}",
        o.stdout
    );

    let o = keyshell(&lib, "alice", &p, &["list", "-metadata"]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains("k1 : cipher: AES/CTR/NoPadding, length: 256, description: hello"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("version: 1"), "{}", o.stdout);
    assert!(o.stdout.contains("[a=1]"), "{}", o.stdout);

    let o = keyshell(&lib, "alice", &p, &["roll", "k1"]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("k1 has been successfully rolled"),
        "{}",
        o.stdout
    );
    let o = keyshell(&lib, "alice", &p, &["list", "-metadata"]).await;
    assert!(o.stdout.contains("version: 2"), "{}", o.stdout);

    // Errors come back as the Java exception the gateway named.
    let o = keyshell(&lib, "alice", &p, &["create", "k1"]).await;
    assert_ne!(o.code, 0);
    assert!(
        format!("{}{}", o.stdout, o.stderr).contains("Key k1 already exists"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );

    let o = keyshell(&lib, "alice", &p, &["delete", "k1", "-f"]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("k1 has been successfully deleted"),
        "{}",
        o.stdout
    );
    let o = keyshell(&lib, "alice", &p, &["list"]).await;
    assert_eq!(o.code, 0);
    assert!(!o.stdout.contains("k1"), "{}", o.stdout);

    // The audit log saw KeyShell's operations as user alice.
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(
        log.contains(
            "OK[op=CREATE_KEY, key=k1, user=alice] UserProvidedMaterial:false Description:hello"
        ),
        "{log}"
    );
    assert!(
        log.contains("OK[op=ROLL_NEW_VERSION, key=k1, user=alice]"),
        "{log}"
    );
    assert!(
        log.contains("OK[op=DELETE_KEY, key=k1, user=alice]"),
        "{log}"
    );
}

/// The harness notices a gateway that never sets the `hadoop.auth` cookie (spec §6.5).
#[tokio::test]
async fn keyshell_fails_against_a_gateway_without_cookies() {
    let Some(lib) = hadoop_lib() else { return };
    let env = Env::new().await;
    let gw = env
        .gateway("127.0.0.1", |c, _| c.auth.danger_never_set_cookie = true)
        .await;
    let o = keyshell(&lib, "alice", &provider(&gw), &["list"]).await;
    assert_ne!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        format!("{}{}", o.stdout, o.stderr).contains("401"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
}
