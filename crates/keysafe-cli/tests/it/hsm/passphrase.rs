//! The passphrase seal through the binary: too short a passphrase is refused at init and a
//! wrong one at start; the server takes it from the environment, and without one it starts
//! sealed until `admin unseal` opens it.

use super::{
    Server, assert_code, client, free_port, init, name, private_file, put_many, read_back,
    wait_status,
};
use crate::{fails_with, keysafe, ok, run};
use keysafe_proto::ErrorCode;

#[tokio::test(flavor = "multi_thread")]
async fn passphrase_seal_through_the_binary() {
    let work = tempfile::tempdir().unwrap();
    let pass = work.path().join("pass");
    private_file(&pass, "a long enough passphrase\n");
    let short = work.path().join("short");
    private_file(&short, "short\n");
    let wrong = work.path().join("wrong");
    private_file(&wrong, "another long passphrase\n");
    let dir = work.path().join("data");
    let port = free_port();
    // Too short: refused, nothing created.
    let mut c = keysafe(work.path());
    init(&mut c, &dir, port);
    c.args(["--seal", "passphrase", "--passphrase-file"])
        .arg(&short);
    assert!(fails_with(&run(c).await, 1).contains("at least 12"));
    assert!(!dir.exists());
    let mut c = keysafe(work.path());
    init(&mut c, &dir, port);
    c.args(["--seal", "passphrase", "--passphrase-file"])
        .arg(&pass);
    ok(&run(c).await);
    // A wrong passphrase at start is a clear error.
    let mut s = keysafe(work.path());
    s.args(["serve", "--data-dir"])
        .arg(&dir)
        .arg("--passphrase-file")
        .arg(&wrong);
    assert!(fails_with(&run(s).await, 1).contains("passphrase does not open the keyring"));
    // From the environment.
    let mut s = keysafe(work.path());
    s.env("KEYSAFE_PASSPHRASE", "a long enough passphrase");
    let srv = Server::start(s, &dir);
    wait_status(&srv.1, "ok").await;
    let cl = client(|| keysafe(work.path()), &dir, work.path(), &srv.1).await;
    let w = put_many(&cl, "p", 3).await;
    drop(srv);
    // Without one (no terminal): starts sealed; `admin unseal` opens it.
    let srv = Server::start(keysafe(work.path()), &dir);
    wait_status(&srv.1, "sealed").await;
    assert_code(cl.get(&name("p/0"), None).await, ErrorCode::Sealed);
    let mut u = keysafe(work.path());
    u.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["unseal", "--passphrase-file"])
        .arg(&wrong);
    assert!(fails_with(&run(u).await, 4).contains("does not open"));
    let mut u = keysafe(work.path());
    u.args(["admin", "--data-dir"])
        .arg(&dir)
        .args(["unseal", "--passphrase-file"])
        .arg(&pass);
    ok(&run(u).await);
    read_back(&cl, &w).await;
}
