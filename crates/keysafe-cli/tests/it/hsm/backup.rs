//! Backups of an HSM-sealed server: they cannot carry the root key, and they restore only where
//! the HSM key is (the module path the backup names is loaded only when the operator names it
//! too).

use super::{MODULE, Server, SoftHsm, client, free_port, init, put_many, read_back, wait_status};
use crate::{fails_with, ok, run};
use keysafe_client::KeysafeClient;

#[tokio::test(flavor = "multi_thread")]
async fn hsm_sealed_backup_restores_only_where_the_key_is() {
    use age::secrecy::ExposeSecret;
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "bk");
    let dir = work.path().join("data");
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    c.args([
        "--seal",
        "pkcs11",
        "--pkcs11-token",
        "bk",
        "--pkcs11-pin-file",
    ])
    .arg(&hsm.pin_file);
    ok(&run(c).await);
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| hsm.cmd(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "b", 5).await;
    let id = age::x25519::Identity::generate();
    let id_file = work.path().join("id.txt");
    std::fs::write(&id_file, id.to_string().expose_secret()).unwrap();
    let backup = work.path().join("b.age");
    let mut b = hsm.cmd(work.path());
    b.args(["admin", "--data-dir"])
        .arg(&dir)
        .args([
            "backup",
            "create",
            "--recipient",
            &id.to_public().to_string(),
            "-o",
        ])
        .arg(&backup);
    ok(&run(b).await);
    // The root key cannot be asked of an HSM seal.
    let mut b = hsm.cmd(work.path());
    b.args(["admin", "--data-dir"])
        .arg(&dir)
        .args([
            "backup",
            "create",
            "--include-root-key",
            "--recipient",
            &id.to_public().to_string(),
            "-o",
        ])
        .arg(work.path().join("x.age"));
    assert!(fails_with(&run(b).await, 2).contains("file seal"));
    drop(srv);

    // Another host: its own HSM with a token of the same name but not the key.
    let other = tempfile::tempdir().unwrap();
    let hsm2 = SoftHsm::new(other.path(), "bk");
    let target = work.path().join("elsewhere");
    // The module path comes from the backup: never loaded unless the operator confirms it.
    let mut r = hsm2.cmd(work.path());
    r.args(["restore", "--from"])
        .arg(&backup)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&target)
        .arg("--pkcs11-pin-file")
        .arg(&hsm2.pin_file);
    let err = fails_with(&run(r).await, 2);
    assert!(
        err.contains("--pkcs11-module") && err.contains(MODULE),
        "{err}"
    );
    assert!(!target.exists());
    let mut r = hsm2.cmd(work.path());
    r.args(["restore", "--from"])
        .arg(&backup)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&target)
        .args(["--pkcs11-module", MODULE])
        .arg("--pkcs11-pin-file")
        .arg(&hsm2.pin_file);
    let err = fails_with(&run(r).await, 1);
    assert!(
        err.contains("HSM key") && err.contains("cannot be used here"),
        "{err}"
    );
    assert!(!target.exists());
    // Where the key is, it restores and serves.
    let port = free_port();
    let mut r = hsm.cmd(work.path());
    r.args(["restore", "--from"])
        .arg(&backup)
        .arg("--identity")
        .arg(&id_file)
        .arg("--data-dir")
        .arg(&target)
        .args(["--pkcs11-module", MODULE])
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    ok(&run(r).await);
    let srv = Server::start(hsm.cmd(work.path()), &target);
    wait_status(&srv.1, "ok").await;
    let home_dir = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("home-")
        })
        .unwrap();
    let mut home = keysafe_client::ClientHome::load(&home_dir).unwrap();
    home.config.servers = vec![srv.1.clone()];
    let moved = KeysafeClient::from_home_with(
        &home,
        // These tests check what the server answers: no client-side cache in between.
        &keysafe_client::ClientOptions {
            use_cache: false,
            ..Default::default()
        },
    )
    .unwrap();
    read_back(&moved, &w).await;
    let _ = cl;
    drop(srv);
}
