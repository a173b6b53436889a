//! `keysafe luks`: LUKS2 image files bound to keysafe. The device mapper is not available on
//! the test machines, so a bound key is verified with `cryptsetup open --test-passphrase` (by
//! `keysafe luks unlock --test` and independently with the key `keysafe get` returns); opening
//! a mapping is checked to either work (where the device mapper exists) or fail on the device
//! mapper, never on the key.

use crate::volume::{ks, set_cache};
use crate::{fails_with, ok, run};
use keysafe_proto::{GroupName, OrgName};
use keysafe_testkit::TestServer;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const INITIAL: &[u8] = b"initial-passphrase";

/// A 32 MiB LUKS2 image with one key slot (the operator's passphrase, in a file).
pub fn luks_image(dir: &Path) -> (PathBuf, PathBuf) {
    let img = dir.join("disk.img");
    let pass = dir.join("initial.pass");
    std::fs::write(&pass, INITIAL).unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let out = Command::new("cryptsetup")
        .args([
            "luksFormat",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--batch-mode",
            "--key-file",
        ])
        .arg(&pass)
        .arg(&img)
        .output()
        .expect("cryptsetup is not installed (Debian package cryptsetup-bin)");
    assert!(
        out.status.success(),
        "luksFormat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (img, pass)
}

fn dump(img: &Path) -> serde_json::Value {
    let out = Command::new("cryptsetup")
        .args(["luksDump", "--dump-json-metadata"])
        .arg(img)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `cryptsetup open --test-passphrase` with `key` on stdin, independently of keysafe.
fn opens(img: &Path, key: &[u8]) -> bool {
    use std::io::Write;
    let mut c = Command::new("cryptsetup")
        .args(["open", "--test-passphrase", "--key-file=-"])
        .arg(img)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(key).unwrap();
    c.wait().unwrap().success()
}

async fn bind(home: &Path, tmp: &Path, img: &Path, pass: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "luks",
        "bind",
        img.to_str().unwrap(),
        "--name",
        "disk1",
        "--existing-key-file",
        pass.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&run(ks(home, tmp, &args)).await)
}

async fn unlock_test(home: &Path, tmp: &Path, img: &Path) -> std::process::Output {
    run(ks(
        home,
        tmp,
        &["luks", "unlock", img.to_str().unwrap(), "--test"],
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_unlock_and_unbind_an_image() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let home = tc.home_dir().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (img, pass) = luks_image(t);
    // Not a LUKS2 device, a wrong existing passphrase: refused, and no deposit is left.
    let plain = t.join("plain.img");
    std::fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
    let err = fails_with(
        &run(ks(
            &home,
            t,
            &[
                "luks",
                "bind",
                plain.to_str().unwrap(),
                "--name",
                "x",
                "--existing-key-file",
                pass.to_str().unwrap(),
            ],
        ))
        .await,
        2,
    );
    assert!(err.contains("not a LUKS2 device"), "{err}");
    let wrong = t.join("wrong.pass");
    std::fs::write(&wrong, b"nope").unwrap();
    let o = run(ks(
        &home,
        t,
        &[
            "luks",
            "bind",
            img.to_str().unwrap(),
            "--name",
            "disk1",
            "--existing-key-file",
            wrong.to_str().unwrap(),
        ],
    ))
    .await;
    let err = fails_with(&o, 1);
    assert!(err.contains("refused"), "{err}");
    assert_eq!(dump(&img)["keyslots"].as_object().unwrap().len(), 1);
    let out = ok(&run(ks(&home, t, &["ls", "--json", "--deleted"])).await);
    assert!(
        !out.contains("luks/disk1"),
        "the unused key was purged: {out}"
    );

    bind(&home, t, &img, &pass, &[]).await;
    let meta = dump(&img);
    assert_eq!(meta["keyslots"].as_object().unwrap().len(), 2);
    let token = &meta["tokens"]["0"];
    assert_eq!(token["type"], "keysafe");
    assert_eq!(token["deposit"], "luks/disk1");
    assert_eq!(token["owner"], tc.fingerprint.as_str());
    // The key keysafe holds opens the device, checked by cryptsetup itself.
    let key = run(ks(&home, t, &["get", "luks/disk1"])).await.stdout;
    assert_eq!(key.len(), 43);
    assert!(opens(&img, &key));
    assert!(!opens(&img, b"not the key"));
    ok(&unlock_test(&home, t, &img).await);
    // Binding the same name twice is refused.
    let o = run(ks(
        &home,
        t,
        &[
            "luks",
            "bind",
            img.to_str().unwrap(),
            "--name",
            "disk1",
            "--existing-key-file",
            pass.to_str().unwrap(),
        ],
    ))
    .await;
    fails_with(&o, 5);
    // A real open needs the device mapper: where it is missing, that is the error.
    let o = run(ks(
        &home,
        t,
        &["luks", "unlock", img.to_str().unwrap(), "ks-test-map"],
    ))
    .await;
    if o.status.success() {
        let _ = Command::new("cryptsetup")
            .args(["close", "ks-test-map"])
            .status();
    } else {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("device-mapper") || err.contains("dm_mod"),
            "{err}"
        );
    }

    ok(&run(ks(&home, t, &["luks", "unbind", img.to_str().unwrap()])).await);
    let meta = dump(&img);
    assert_eq!(meta["keyslots"].as_object().unwrap().len(), 1);
    assert!(meta["tokens"].as_object().unwrap().is_empty());
    assert!(!opens(&img, &key));
    assert!(
        opens(&img, INITIAL),
        "the operator's passphrase still opens it"
    );
    let o = unlock_test(&home, t, &img).await;
    assert!(!o.status.success());
}

/// The release is bound to the registered client: disabling it, or unsharing the key, stops the
/// next unlock even with a fresh cached copy; a new host pending approval cannot unlock until an
/// administrator approves it.
#[tokio::test(flavor = "multi_thread")]
async fn disabling_the_client_or_unsharing_stops_unlocks() {
    let ts = TestServer::start().await;
    let host = ts.new_client("acme").await;
    let rescuer = ts.new_client("acme").await;
    keysafe_client::vault::admin_create_group(
        &ts.admin,
        &OrgName::parse("acme").unwrap(),
        &GroupName::parse("recovery").unwrap(),
        std::slice::from_ref(&rescuer.fingerprint),
    )
    .await
    .unwrap();
    let home = host.home_dir().to_owned();
    let rhome = rescuer.home_dir().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (img, pass) = luks_image(t);
    bind(&home, t, &img, &pass, &["--recovery", "group:recovery"]).await;
    ok(&unlock_test(&home, t, &img).await);
    // The rescuer unlocks with the owner named in the device's token.
    ok(&unlock_test(&rhome, t, &img).await);

    // Every release is in the audit trail (entries of reads are appended in batches).
    let mut found = false;
    for _ in 0..100 {
        let page = ts.admin.audit_entries(0, None, 1000).await.unwrap();
        found = page.entries.iter().any(|e| {
            e.event.target.contains("luks/disk1")
                && e.event.client.as_deref() == Some(host.fingerprint.as_str())
                && e.event.operation.starts_with("GET /v1/deposits")
                && e.event.outcome == "ok"
        });
        if found {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(found, "no audit entry for the key release");
    ts.admin
        .client_action(&host.fingerprint, "disable")
        .await
        .unwrap();
    let err = fails_with(&unlock_test(&home, t, &img).await, 4);
    assert!(err.contains("disabled"), "{err}");
    ts.admin
        .client_action(&host.fingerprint, "enable")
        .await
        .unwrap();
    ok(&unlock_test(&home, t, &img).await);

    ok(&run(ks(
        &home,
        t,
        &["unshare", "luks/disk1", "--with", "group:recovery"],
    ))
    .await);
    let o = unlock_test(&rhome, t, &img).await;
    assert!(
        !o.status.success(),
        "unshared: the rescuer's next unlock fails"
    );

    // A new host in an organisation that requires approval.
    ts.admin
        .set_org_auth(
            &OrgName::parse("acme").unwrap(),
            &keysafe_proto::api::OrgSetAuthRequest::Approval,
        )
        .await
        .unwrap();
    let newcomer = ts.register("acme", None).await.unwrap();
    let nhome = newcomer.home_dir().to_owned();
    let o = run(ks(
        &nhome,
        t,
        &[
            "luks",
            "unlock",
            img.to_str().unwrap(),
            "--test",
            "--owner",
            host.fingerprint.as_str(),
        ],
    ))
    .await;
    let err = fails_with(&o, 4);
    assert!(err.contains("pending") || err.contains("approv"), "{err}");
    ts.admin
        .client_action(&newcomer.fingerprint, "approve")
        .await
        .unwrap();
    ok(&run(ks(
        &home,
        t,
        &[
            "share",
            "luks/disk1",
            "--with",
            newcomer.fingerprint.as_str(),
        ],
    ))
    .await);
    ok(&run(ks(
        &nhome,
        t,
        &[
            "luks",
            "unlock",
            img.to_str().unwrap(),
            "--test",
            "--owner",
            host.fingerprint.as_str(),
        ],
    ))
    .await);
}

/// With a first server that accepts connections and never answers, an unlock does not wait for
/// its timeout (30 s): every server is asked at once.
#[tokio::test(flavor = "multi_thread")]
async fn unlock_asks_every_server_at_once() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let home = tc.home_dir().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (img, pass) = luks_image(t);
    bind(&home, t, &img, &pass, &[]).await;
    // A listener that is never accepted: connections complete, TLS never does.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("https://127.0.0.1:{}", dead.local_addr().unwrap().port());
    let cfg = home.join("client.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        &format!("servers = [\"{}\"]", ts.url),
        &format!("servers = [\"{dead_url}\", \"{}\"]", ts.url),
    );
    assert!(text.contains(&dead_url), "{text}");
    std::fs::write(&cfg, text).unwrap();
    let _ = std::fs::remove_file(home.join("server-state.json"));
    set_cache(&home, "enabled = false");
    let started = std::time::Instant::now();
    ok(&unlock_test(&home, t, &img).await);
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(20),
        "the unlock waited for the dead server ({took:?}; its timeout is 30 s)"
    );
    drop(dead);
}
