//! Seal migration, refused while a server runs: from the file seal to an HSM key in
//! per-deposit mode, to a new HSM key in keyring mode (the old key can then be destroyed), and
//! to a passphrase; every deposit reads back after each step.

use super::{
    Server, SoftHsm, client, free_port, init, private_file, put_many, read_back, wait_status,
};
use crate::{fails_with, ok, run};

#[tokio::test(flavor = "multi_thread")]
async fn seal_migration_file_to_hsm_to_new_hsm_key_to_passphrase() {
    let work = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(work.path(), "mig");
    let dir = work.path().join("data");
    let mut c = hsm.cmd(work.path());
    init(&mut c, &dir, free_port());
    ok(&run(c).await);
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| hsm.cmd(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "m", 10).await;
    // Refused while the server runs.
    let mut m = hsm.cmd(work.path());
    m.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["seal", "migrate", "--to", "passphrase"]);
    assert!(fails_with(&run(m).await, 1).contains("in use by a running keysafe server"));
    drop(srv);

    let migrate = |args: &[&str]| {
        let mut m = hsm.cmd(work.path());
        m.args(["admin", "--data-dir"])
            .arg(&dir)
            .args(["seal", "migrate"])
            .args(args);
        m
    };
    let pin = hsm.pin_file.to_str().unwrap().to_owned();
    // file -> pkcs11, per-deposit.
    ok(&run(migrate(&[
        "--to",
        "pkcs11",
        "--pkcs11-token",
        "mig",
        "--pkcs11-key",
        "k1",
        "--pkcs11-mode",
        "per-deposit",
        "--pkcs11-pin-file",
        &pin,
    ]))
    .await);
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    assert_eq!(
        wait_status(&srv.1, "ok").await.seal.as_deref(),
        Some("pkcs11")
    );
    read_back(&cl, &w).await;
    drop(srv);
    // A new HSM key label (HSM key rotation), back to keyring mode.
    ok(&run(migrate(&[
        "--to",
        "pkcs11",
        "--pkcs11-key",
        "k2",
        "--pkcs11-mode",
        "keyring",
    ]))
    .await);
    // The old key can go now: nothing needs it.
    hsm.destroy_key("mig", "k1");
    let srv = Server::start(hsm.cmd(work.path()), &dir);
    wait_status(&srv.1, "ok").await;
    read_back(&cl, &w).await;
    drop(srv);
    // pkcs11 -> passphrase.
    let pass = work.path().join("pass");
    private_file(&pass, "migrated passphrase ok\n");
    ok(&run(migrate(&[
        "--to",
        "passphrase",
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]))
    .await);
    hsm.destroy_key("mig", "k2");
    let mut s = hsm.cmd(work.path());
    s.env("KEYSAFE_PASSPHRASE", "migrated passphrase ok");
    let srv = Server::start(s, &dir);
    assert_eq!(
        wait_status(&srv.1, "ok").await.seal.as_deref(),
        Some("passphrase")
    );
    read_back(&cl, &w).await;
    let toml = std::fs::read_to_string(dir.join("keysafe.toml")).unwrap();
    assert!(toml.contains("type = \"passphrase\""));
    drop(srv);
}
