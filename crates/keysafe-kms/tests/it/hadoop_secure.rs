//! The stock Hadoop client against the gateway's secure modes: Kerberos (logged in from a
//! keytab against a throwaway MIT KDC) and client certificates (a PKCS#12 keystore).

use crate::common::*;
use crate::hadoop::{
    Out, assert_ok, hadoop_lib, harness_classes, harness_config, java, java_with, provider,
};
use std::path::Path;

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
