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
fn hadoop_lib() -> PathBuf {
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
    java_with(lib, extra, &[], &[("HADOOP_USER_NAME", user)], args).await
}

async fn java_with(
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

fn assert_ok(o: &Out, expect: &[&str]) {
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

fn harness_config(c: &mut keysafe_kms::KmsConfig, dir: &Path) {
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

/// The harness with `hadoop.security.authentication=kerberos`, logged in from `keytab` as
/// `principal` (or, with None, with no ticket at all).
async fn krb_harness(
    lib: &Path,
    realm: &crate::kerberos::Realm,
    login: Option<&str>,
    args: &[&str],
) -> Out {
    let classes = harness_classes(lib);
    let mut jvm = vec![
        format!(
            "-Djava.security.krb5.conf={}",
            realm.kdc.krb5_conf.display()
        ),
        "-Dkms.kerberos=true".to_owned(),
        "-Dsun.security.krb5.disableReferrals=true".to_owned(),
    ];
    if let Some(p) = login {
        jvm.push(format!("-Dkms.principal={}", realm.kdc.principal(p)));
        jvm.push(format!("-Dkms.keytab={}", realm.users_keytab.display()));
    }
    // No ticket cache to fall back on: a login is the keytab's or nothing.
    let nocache = format!(
        "FILE:{}",
        realm.kdc.dir.path().join("no-such-ccache").display()
    );
    let mut a = vec!["KmsHarness"];
    a.extend_from_slice(args);
    java_with(
        lib,
        Some(&classes),
        &jvm,
        &[("KRB5CCNAME", &nocache), ("HADOOP_USER_NAME", "nobody")],
        &a,
    )
    .await
}

/// The stock Hadoop client logged in from a keytab against a Kerberos gateway: KeyShell
/// create/list/roll/delete, generate and decrypt EEKs, a delegation token fetched with Kerberos
/// and used by a process that has no ticket, and a client without a ticket refused.
#[tokio::test]
async fn kerberos_keyshell_eeks_and_tokens() {
    let lib = hadoop_lib();
    let realm = crate::kerberos::Realm::start();
    let env = Env::new().await;
    let kt = realm.service_keytab.clone();
    let gw = env
        .gateway("127.0.0.1", |c, _| crate::kerberos::kerberos(c, &kt))
        .await;
    let p = format!("kms://http@localhost:{}/kms", gw.addr.port());

    let o = krb_harness(&lib, &realm, Some("alice"), &["keyshell", &p, "ks1"]).await;
    assert_ok(
        &o,
        &[
            "logged in from the keytab as alice@KMS.TEST (KERBEROS)",
            "keyshell create",
            "keyshell list",
            "keyshell roll",
            "keyshell delete",
        ],
    );
    let o = krb_harness(&lib, &realm, Some("alice"), &["eek", &p, "ez-krb"]).await;
    assert_ok(
        &o,
        &[
            "generate+decrypt x25 match DefaultCryptoExtension",
            "reencrypt",
            "generate after roll",
        ],
    );
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(
        log.contains("OK[op=CREATE_KEY, key=ks1, user=alice] UserProvidedMaterial:false Description:made over kerberos"),
        "{log}"
    );
    assert!(
        log.contains("OK[op=DELETE_KEY, key=ks1, user=alice]"),
        "{log}"
    );

    // A token fetched with Kerberos, then used by a process without any ticket.
    let file = gw.dir.path().join("tokens.bin");
    let f = file.to_str().unwrap();
    let o = krb_harness(&lib, &realm, Some("alice"), &["dt-save", &p, f]).await;
    assert_ok(&o, &["saved token kms-dt"]);
    let o = krb_harness(&lib, &realm, None, &["dt-use", &p, f, "ez-krb"]).await;
    assert_ok(
        &o,
        &["token used without a ticket", "without the token: refused"],
    );
    // No ticket, no token: refused, and no key material.
    let o = krb_harness(&lib, &realm, None, &["refused", &p, "ez-krb"]).await;
    assert_ok(&o, &["refused"]);
    assert!(!o.stdout.contains("material"), "{}", o.stdout);
    // The gateway answered the handshake with the Negotiate challenge, so the client wanted a
    // Kerberos ticket (it never fell back to naming itself).
    assert!(
        o.stdout.contains("Failed to find any Kerberos tgt"),
        "{}",
        o.stdout
    );
}

/// `LoadBalancingKMSClientProvider` over two Kerberos gateways on 127.0.0.1 and 127.0.0.2 that
/// share one service keytab (principal `*`: every HTTP/ principal in it).
#[tokio::test]
async fn kerberos_load_balancing_over_two_gateways_sharing_one_keytab() {
    let lib = hadoop_lib();
    let realm = crate::kerberos::Realm::start();
    let env = Env::new().await;
    let kt = realm.service_keytab.clone();
    let krb_any = |c: &mut keysafe_kms::KmsConfig, kt: &Path| {
        crate::kerberos::kerberos(c, kt);
        c.auth.principal = Some("*".into());
        c.auth.default_realm = Some(crate::kerberos::REALM.into());
    };
    let a = env
        .gateway("127.0.0.1", |c, d| {
            harness_config(c, d);
            krb_any(c, &kt);
        })
        .await;
    let b = env
        .gateway(&format!("127.0.0.2:{}", a.addr.port()), |c, d| {
            harness_config(c, d);
            krb_any(c, &kt);
        })
        .await;
    let lb = format!("kms://http@127.0.0.1;127.0.0.2:{}/kms", a.addr.port());
    let o = krb_harness(
        &lib,
        &realm,
        Some("alice"),
        &["lb", &lb, &provider(&a), &provider(&b), "krb-lb"],
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
    for g in [&a, &b] {
        g.gw.audit.flush();
        let log = std::fs::read_to_string(g.audit_log()).unwrap();
        assert!(
            log.contains("op=GENERATE_EEK, key=krb-lb, user=alice"),
            "{log}"
        );
    }
}

/// `[auth] type = "certificate"`: KeyShell over `kms://https@` with a PKCS#12 keystore holding
/// a client certificate from the configured CA. The user is the certificate's, not the one the
/// client names itself (`HADOOP_USER_NAME`).
#[tokio::test]
async fn keyshell_over_https_with_a_client_certificate() {
    let lib = hadoop_lib();
    let env = Env::new().await;
    let ca = crate::certificates::Ca::new("clients");
    let gw = env
        .gateway("127.0.0.1", |c, d| {
            crate::certificates::certificate_auth(c, d, &env, &ca)
        })
        .await;
    let conf = gw.dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let trust = conf.join("trust.p12");
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
        .arg(&env.server.config.tls_cert)
        .arg("-keystore")
        .arg(&trust)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (cert, key) = ca.client("Alice", Some("alice@hadoop.test"));
    std::fs::write(conf.join("client.pem"), cert).unwrap();
    std::fs::write(conf.join("client.key"), key).unwrap();
    let keystore = conf.join("client.p12");
    let o = std::process::Command::new("openssl")
        .args([
            "pkcs12",
            "-export",
            "-name",
            "client",
            "-passout",
            "pass:changeit",
            "-in",
        ])
        .arg(conf.join("client.pem"))
        .arg("-inkey")
        .arg(conf.join("client.key"))
        .arg("-out")
        .arg(&keystore)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ssl_client = |with_keystore: bool| {
        let ks = if with_keystore {
            format!(
                "<property><name>ssl.client.keystore.location</name><value>{}</value></property>\
                 <property><name>ssl.client.keystore.type</name><value>pkcs12</value></property>\
                 <property><name>ssl.client.keystore.password</name><value>changeit</value></property>\
                 <property><name>ssl.client.keystore.keypassword</name><value>changeit</value></property>",
                keystore.display()
            )
        } else {
            String::new()
        };
        format!(
            "<configuration>\
             <property><name>ssl.client.truststore.location</name><value>{}</value></property>\
             <property><name>ssl.client.truststore.type</name><value>pkcs12</value></property>\
             <property><name>ssl.client.truststore.password</name><value>changeit</value></property>\
             {ks}</configuration>",
            trust.display()
        )
    };
    std::fs::write(conf.join("ssl-client.xml"), ssl_client(true)).unwrap();
    // Hadoop's client loads its keystore only when told that servers require certificates.
    std::fs::write(
        conf.join("core-site.xml"),
        "<configuration><property><name>hadoop.ssl.require.client.cert</name><value>true</value></property></configuration>",
    )
    .unwrap();
    let p = format!("kms://https@localhost:{}/kms", gw.addr.port());
    let run = |args: Vec<String>| {
        let lib = lib.clone();
        let conf = conf.clone();
        async move {
            let mut a = vec!["org.apache.hadoop.crypto.key.KeyShell".to_string()];
            a.extend(args);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            java(&lib, Some(&conf), "mallory", &a).await
        }
    };
    let o = run(vec![
        "create".into(),
        "ck".into(),
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
        o.stdout.contains("ck : cipher: AES/CTR/NoPadding"),
        "{}",
        o.stdout
    );
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(
        log.contains("OK[op=CREATE_KEY, key=ck, user=alice]"),
        "{log}"
    );
    assert!(!log.contains("mallory"), "{log}");
    // Without the keystore the handshake fails.
    std::fs::write(conf.join("ssl-client.xml"), ssl_client(false)).unwrap();
    let o = run(vec!["list".into(), "-provider".into(), p]).await;
    assert_ne!(o.code, 0, "{}", o.stdout);
}
