//! Interoperability with the real Hadoop 3.5.0 client jars (KeyShell and the Java harness in
//! interop/hadoop/KmsHarness.java, compiled with javac here).
//!
//! The jars come from `interop/hadoop/setup-client.sh` (`HADOOP_CLIENT_LIB`, else the script's
//! cache folder; if neither holds them, the tests run the script, which downloads them once).
//! Missing jars fail these tests: they never pass without having run Hadoop's client.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn has_jars(lib: &Path) -> bool {
    std::fs::read_dir(lib)
        .map(|d| {
            d.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("hadoop-client-api-")
            })
        })
        .unwrap_or(false)
}

/// The folder with the Hadoop client jars, fetched by the repository's setup script if needed
/// (once per test binary).
pub(crate) fn hadoop_lib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    let lib = LIB.get_or_init(|| {
        if let Some(lib) = std::env::var_os("HADOOP_CLIENT_LIB").map(PathBuf::from)
            && has_jars(&lib)
        {
            return lib;
        }
        let script = repo_root().join("interop/hadoop/setup-client.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("bash");
        let lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            out.status.success() && has_jars(&lib),
            "cannot get the Hadoop client jars with {}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        lib
    });
    lib.clone()
}

pub(crate) fn classpath(lib: &Path, extra: Option<&Path>) -> String {
    let mut cp = format!("{}/*", lib.display());
    if let Some(e) = extra {
        cp.push(':');
        cp.push_str(&e.display().to_string());
    }
    cp
}

pub(crate) struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub(crate) async fn java(lib: &Path, extra: Option<&Path>, user: &str, args: &[&str]) -> Out {
    java_with(lib, extra, &[], &[("HADOOP_USER_NAME", user)], args).await
}

pub(crate) async fn java_with(
    lib: &Path,
    extra: Option<&Path>,
    jvm: &[String],
    env: &[(&str, &str)],
    args: &[&str],
) -> Out {
    let o = tokio::process::Command::new("java")
        .args(jvm)
        .arg("-cp")
        .arg(classpath(lib, extra))
        .args(args)
        .envs(env.iter().copied())
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
pub(crate) fn harness_classes(lib: &Path) -> PathBuf {
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

pub(crate) fn provider(gw: &Gw) -> String {
    format!("kms://http@{}:{}/kms", gw.addr.ip(), gw.addr.port())
}

#[tokio::test]
async fn keyshell_create_list_roll_delete() {
    let lib = hadoop_lib();
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
    let lib = hadoop_lib();
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
    let o = harness(&lib, "root", &["eek", &provider(&gw), "k"]).await;
    assert_ne!(o.code, 0, "{}", o.stdout);
    assert!(o.stdout.contains("EXCEPTION"), "{}", o.stdout);
}

pub(crate) fn assert_ok(o: &Out, expect: &[&str]) {
    assert_eq!(o.code, 0, "harness failed:\n{}\n{}", o.stdout, o.stderr);
    for e in expect {
        assert!(
            o.stdout.contains(&format!("OK {e}")),
            "missing 'OK {e}' in:\n{}",
            o.stdout
        );
    }
}

/// Everything but root and alice (and the proxy user oozie acting for alice) is refused.
const HARNESS_ACLS: &str = r#"<configuration>
  <property><name>hadoop.kms.acl.CREATE</name><value>root,alice</value></property>
  <property><name>hadoop.kms.acl.DELETE</name><value>root,alice</value></property>
  <property><name>hadoop.kms.acl.ROLLOVER</name><value>root,alice</value></property>
  <property><name>hadoop.kms.acl.GET</name><value>root,alice</value></property>
  <property><name>hadoop.kms.acl.GET_KEYS</name><value>root,alice</value></property>
  <property><name>hadoop.kms.acl.GET_METADATA</name><value>root,alice</value></property>
  <property><name>hadoop.kms.acl.SET_KEY_MATERIAL</name><value>root,alice</value></property>
  <property><name>hadoop.kms.acl.GENERATE_EEK</name><value>root,alice</value></property>
  <property><name>hadoop.kms.acl.DECRYPT_EEK</name><value>root,alice</value></property>
  <property><name>default.key.acl.MANAGEMENT</name><value>*</value></property>
  <property><name>default.key.acl.GENERATE_EEK</name><value>*</value></property>
  <property><name>default.key.acl.DECRYPT_EEK</name><value>*</value></property>
  <property><name>default.key.acl.READ</name><value>*</value></property>
</configuration>"#;

pub(crate) fn harness_config(c: &mut keysafe_kms::KmsConfig, dir: &Path) {
    std::fs::write(dir.join("kms-acls.xml"), HARNESS_ACLS).unwrap();
    c.acl_file = Some(dir.join("kms-acls.xml"));
    c.proxyuser.insert(
        "oozie".into(),
        keysafe_kms::config::ProxyUserConfig {
            users: Some("alice".into()),
            groups: None,
            hosts: Some("127.0.0.1,127.0.0.2".into()),
        },
    );
}

/// Two gateways of one organisation on 127.0.0.1 and 127.0.0.2, same port (as the LB URI
/// needs), each with its own keysafe identity (the second one added to the group and admitted).
async fn two_gateways(env: &Env) -> (Gw, Gw, String, keysafe_testkit::TestClient) {
    let a = env
        .gateway("127.0.0.1", |c, d| {
            harness_config(c, d);
            c.admit_interval = std::time::Duration::from_millis(200);
        })
        .await;
    let second = env.server.new_client("hadoop").await;
    env.server
        .admin
        .admin_add_member(
            &env.client.org,
            &keysafe_proto::GroupName::parse("kms").unwrap(),
            &second.fingerprint,
        )
        .await
        .unwrap();
    let pin = a.gw.group_recipient.clone();
    let b = env
        .gateway_as(&second, &format!("127.0.0.2:{}", a.addr.port()), |c, d| {
            harness_config(c, d);
            c.keysafe.group_recipient = pin;
        })
        .await;
    let lb = format!("kms://http@127.0.0.1;127.0.0.2:{}/kms", a.addr.port());
    (a, b, lb, second)
}

#[tokio::test]
async fn harness_eek_operations_match_hadoop() {
    let lib = hadoop_lib();
    let env = Env::new().await;
    let gw = env.gateway("127.0.0.1", |_, _| {}).await;
    let o = harness(&lib, "root", &["eek", &provider(&gw), "ez1"]).await;
    assert_ok(
        &o,
        &[
            "generate+decrypt x25 match DefaultCryptoExtension",
            "reference EEK decrypts at gateway",
            "reencrypt",
            "reencrypt batch",
            "generate after roll",
        ],
    );
}

#[tokio::test]
async fn harness_tokens_doas_and_denial() {
    let lib = hadoop_lib();
    let env = Env::new().await;
    let (a, b, lb, _second) = two_gateways(&env).await;
    let pa = provider(&a);

    // Delegation tokens: got by root, used by bob (who the ACLs refuse), renewed by yarn.
    let mut root = Caller::new("root");
    root.call(
        &a,
        reqwest::Method::POST,
        "/keys",
        Some(r#"{"name":"dtkey"}"#),
    )
    .await;
    let o = harness(&lib, "root", &["dt", &pa, "dtkey"]).await;
    assert_ok(
        &o,
        &[
            "got token",
            "token used by a second user",
            "renewed by yarn",
            "renew by non-renewer refused",
            "cancelled",
        ],
    );
    a.gw.audit.flush();
    let log = std::fs::read_to_string(a.audit_log()).unwrap();
    assert!(log.contains("OK[op=GET_KEYS, user=root]"), "{log}");
    assert!(
        !log.contains("user=bob"),
        "bob must have acted as the token's owner:\n{log}"
    );

    // doAs through the proxy-user rules.
    let o = harness(&lib, "oozie", &["doas", &pa]).await;
    assert_ok(&o, &["doAs alice", "doAs bob refused"]);
    let log = std::fs::read_to_string(a.audit_log()).unwrap();
    assert!(
        log.contains("OK[op=CREATE_KEY, key=made-by-alice, user=alice]"),
        "{log}"
    );

    // An ACL denial through the LB provider: one 403, no failover to the other gateway.
    let o = harness(&lib, "mallory", &["denied", &lb, &pa, "denykey"]).await;
    assert_ok(&o, &["denied"]);
    let both = std::fs::read_to_string(a.audit_log()).unwrap()
        + &std::fs::read_to_string(b.audit_log()).unwrap();
    let denials = both
        .matches("UNAUTHORIZED[op=DECRYPT_EEK, key=denykey, user=mallory]")
        .count();
    assert_eq!(denials, 1, "exactly one gateway was asked:\n{both}");
}

#[tokio::test]
async fn harness_load_balancing_over_two_gateways() {
    let lib = hadoop_lib();
    let env = Env::new().await;
    let (a, b, lb, _second) = two_gateways(&env).await;
    let o = harness(
        &lib,
        "root",
        &["lb", &lb, &provider(&a), &provider(&b), "lbkey"],
    )
    .await;
    assert_ok(
        &o,
        &[
            "created through one gateway, used through the other",
            "load-balanced calls",
            "rollover through the LB seen by both gateways",
            "LB token honoured by both gateways",
            "delete through the LB",
        ],
    );
    // Both gateways served load-balanced traffic.
    a.gw.audit.flush();
    b.gw.audit.flush();
    for g in [&a, &b] {
        let log = std::fs::read_to_string(g.audit_log()).unwrap();
        assert!(log.contains("op=GENERATE_EEK, key=lbkey"), "{log}");
        assert!(log.contains("op=GET_METADATA, key=lbkey"), "{log}");
    }
}

/// `kms://https@...`: KeyShell over TLS, trusting the gateway's certificate through Hadoop's own
/// `ssl-client.xml` truststore settings.
#[tokio::test]
async fn keyshell_over_https() {
    let lib = hadoop_lib();
    let env = Env::new().await;
    let (cert, key) = (
        env.server.config.tls_cert.clone(),
        env.server.config.tls_key.clone(),
    );
    let gw = env
        .gateway("127.0.0.1", |c, _| {
            c.tls = Some(keysafe_kms::config::TlsConfig {
                cert: cert.clone(),
                key,
            })
        })
        .await;
    // A PKCS#12 truststore with the certificate, and ssl-client.xml on the classpath.
    let conf = gw.dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let store = conf.join("trust.p12");
    let o = std::process::Command::new("keytool")
        .args([
            "-importcert",
            "-noprompt",
            "-alias",
            "kms",
            "-storetype",
            "PKCS12",
            "-storepass",
            "changeit",
            "-file",
        ])
        .arg(&cert)
        .arg("-keystore")
        .arg(&store)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(
        conf.join("ssl-client.xml"),
        format!(
            "<configuration>\
             <property><name>ssl.client.truststore.location</name><value>{}</value></property>\
             <property><name>ssl.client.truststore.type</name><value>pkcs12</value></property>\
             <property><name>ssl.client.truststore.password</name><value>changeit</value></property>\
             </configuration>",
            store.display()
        ),
    )
    .unwrap();
    // The certificate names localhost and 127.0.0.1.
    let p = format!("kms://https@localhost:{}/kms", gw.addr.port());
    let run = |args: Vec<String>| {
        let lib = lib.clone();
        let conf = conf.clone();
        async move {
            let mut a = vec!["org.apache.hadoop.crypto.key.KeyShell".to_string()];
            a.extend(args);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            java(&lib, Some(&conf), "alice", &a).await
        }
    };
    let o = run(vec![
        "create".into(),
        "tk".into(),
        "-provider".into(),
        p.clone(),
    ])
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let o = run(vec![
        "list".into(),
        "-metadata".into(),
        "-provider".into(),
        p.clone(),
    ])
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("tk : cipher: AES/CTR/NoPadding"),
        "{}",
        o.stdout
    );
    // Without the truststore the same client refuses the gateway.
    std::fs::remove_file(conf.join("ssl-client.xml")).unwrap();
    let o = run(vec!["list".into(), "-provider".into(), p]).await;
    assert_ne!(o.code, 0, "{}", o.stdout);
    let all = format!("{}{}", o.stdout, o.stderr).to_lowercase();
    assert!(
        all.contains("pkix") || all.contains("certificat") || all.contains("ssl"),
        "{all}"
    );
}
