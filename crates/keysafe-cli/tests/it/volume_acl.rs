//! Process access rules on a mounted volume, through the binary: two executables built for the
//! test (copies of cat at different paths, one later changed), a shell running a script, and a
//! rule file tampered with on disk.

use crate::volume::{Dirs, MARKER, Unmount, is_mounted, ks, mount, prepare_and_mount, umount};
use crate::{fails_with, ok, run};
use keysafe_testkit::TestServer;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A copy of `cat` at `path` (executable), so the rules see another executable path.
fn cat_copy(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let cat = std::fs::canonicalize("/bin/cat").unwrap();
    std::fs::copy(&cat, path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_owned()
}

/// Runs `exe args...`; Ok(stdout) or Err(stderr).
fn try_run(exe: &Path, args: &[&Path]) -> Result<Vec<u8>, String> {
    let out = Command::new(exe).args(args).output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn log(home: &Path, name: &str) -> String {
    std::fs::read_to_string(home.join(format!("volumes/{name}.log"))).unwrap_or_default()
}

async fn acl(home: &Path, d: &Dirs, args: &[&str]) -> String {
    let mut all = vec!["volume", "acl"];
    all.extend_from_slice(args);
    ok(&run(ks(home, d.path(), &all)).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_let_only_the_listed_executable_in_and_log_denials() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let home = tc.home_dir().to_owned();
    let d = Dirs::new();
    let _guard = prepare_and_mount(&home, &d, "data", &[]).await;
    let m = &d.mnt;
    std::fs::create_dir(m.join("db")).unwrap();
    std::fs::write(m.join("db/secret"), MARKER).unwrap();
    std::fs::write(m.join("public"), b"public").unwrap();
    let allowed = cat_copy(&d.path().join("bin/allowed-cat"));
    let other = cat_copy(&d.path().join("bin/other-cat"));
    let mp = m.to_str().unwrap();
    acl(
        &home,
        &d,
        &[
            "add",
            mp,
            "--allow",
            m.join("db").to_str().unwrap(),
            "--exe",
            allowed.to_str().unwrap(),
            "--sha256",
            "auto",
        ],
    )
    .await;
    let list = acl(&home, &d, &["list", mp, "--json"]).await;
    let set: serde_json::Value = serde_json::from_str(list.trim()).unwrap();
    assert_eq!(set["rules"][0]["prefix"], "/db");
    assert_eq!(set["mode"], "enforcing");

    let secret = m.join("db/secret");
    assert_eq!(try_run(&allowed, &[&secret]).unwrap(), MARKER);
    let err = try_run(&other, &[&secret]).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
    // Uncovered paths stay open; the covered directory cannot be listed or written by others.
    assert_eq!(try_run(&other, &[&m.join("public")]).unwrap(), b"public");
    assert!(try_run(Path::new("/bin/ls"), &[&m.join("db")]).is_err());
    assert!(try_run(Path::new("/usr/bin/touch"), &[&m.join("db/new")]).is_err());
    let e = std::fs::read(&secret).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    // No way around by a new name outside the covered path, nor by moving it out.
    let e = std::fs::hard_link(&secret, m.join("public-link")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    let e = std::fs::rename(&secret, m.join("moved")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    let l = log(&home, "data");
    assert!(l.contains("access denied"), "{l}");
    assert!(l.contains("other-cat"), "the process is logged: {l}");
    assert!(l.contains("/db/secret"), "the file is logged: {l}");
    assert!(l.contains("#1 /db ->"), "the rules are logged: {l}");

    // The hash is pinned: the same path with other content is another executable.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&allowed)
        .unwrap()
        .write_all(b"\0")
        .unwrap();
    let err = try_run(&allowed, &[&secret]).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");

    acl(&home, &d, &["mode", mp, "permissive"]).await;
    assert_eq!(try_run(&other, &[&secret]).unwrap(), MARKER);
    assert!(log(&home, "data").contains("would be denied"));
    acl(&home, &d, &["mode", mp, "admin"]).await;
    assert_eq!(try_run(&other, &[&secret]).unwrap(), MARKER);
    assert!(log(&home, "data").contains("admin mode"));
    acl(&home, &d, &["mode", mp, "enforcing"]).await;
    assert!(try_run(&other, &[&secret]).is_err());
    acl(&home, &d, &["rm", mp, "1"]).await;
    assert_eq!(try_run(&other, &[&secret]).unwrap(), MARKER);
    let out = ok(&run(ks(&home, d.path(), &["volume", "status", "--json"])).await);
    let st: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(st[0]["mode"], "enforcing");
    assert_eq!(st[0]["rules"].as_array().unwrap().len(), 0);
}

/// An interpreter rule matches the script it runs, not any program of that interpreter.
#[tokio::test(flavor = "multi_thread")]
async fn interpreter_rules_match_the_script() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let home = tc.home_dir().to_owned();
    let d = Dirs::new();
    let _guard = prepare_and_mount(&home, &d, "data", &[]).await;
    std::fs::write(d.mnt.join("secret"), MARKER).unwrap();
    // The shell opens the file itself (a builtin redirection), so the shell is the caller.
    let body = "while IFS= read -r l || [ -n \"$l\" ]; do printf '%s' \"$l\"; done < \"$1\"\n";
    let job = d.path().join("scripts/job.sh");
    let copy = d.path().join("scripts/copy.sh");
    std::fs::create_dir_all(job.parent().unwrap()).unwrap();
    std::fs::write(&job, body).unwrap();
    std::fs::write(&copy, body).unwrap();
    acl(
        &home,
        &d,
        &[
            "add",
            "data",
            "--allow",
            "/",
            "--exe",
            "/bin/sh",
            "--script",
            job.to_str().unwrap(),
        ],
    )
    .await;
    let sh = Path::new("/bin/sh");
    let secret = d.mnt.join("secret");
    assert_eq!(try_run(sh, &[&job, &secret]).unwrap(), MARKER);
    assert!(try_run(sh, &[&copy, &secret]).is_err());
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("cat < {}", secret.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_rule_file_refuses_the_mount_and_fails_closed_when_mounted() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let home = tc.home_dir().to_owned();
    let d = Dirs::new();
    let guard = prepare_and_mount(&home, &d, "data", &[]).await;
    std::fs::write(d.mnt.join("secret"), MARKER).unwrap();
    let allowed = cat_copy(&d.path().join("bin/allowed-cat"));
    acl(
        &home,
        &d,
        &[
            "add",
            "data",
            "--allow",
            "/",
            "--exe",
            allowed.to_str().unwrap(),
        ],
    )
    .await;
    let secret = d.mnt.join("secret");
    assert_eq!(try_run(&allowed, &[&secret]).unwrap(), MARKER);
    umount(&home, &d).await;
    drop(guard);

    // Granting oneself access by editing the file does not work: the mount is refused.
    let rules = home.join("volumes/data.rules.json");
    let good = std::fs::read_to_string(&rules).unwrap();
    let cat = std::fs::canonicalize("/bin/cat").unwrap();
    let forged = good.replace(allowed.to_str().unwrap(), cat.to_str().unwrap());
    assert_ne!(forged, good);
    std::fs::write(&rules, &forged).unwrap();
    let o = run(ks(
        &home,
        d.path(),
        &[
            "volume",
            "mount",
            d.cipher.to_str().unwrap(),
            d.mnt.to_str().unwrap(),
        ],
    ))
    .await;
    let _u = Unmount(d.mnt.clone());
    let err = fails_with(&o, 7);
    assert!(err.contains("does not verify"), "{err}");
    assert!(!is_mounted(&d.mnt));
    // `acl` commands refuse to build on a tampered file too.
    let o = run(ks(&home, d.path(), &["volume", "acl", "list", "data"])).await;
    fails_with(&o, 7);

    // While mounted, a tampered file makes every covered operation fail (closed).
    std::fs::write(&rules, &good).unwrap();
    let _guard = mount(&home, &d).await;
    assert_eq!(try_run(&allowed, &[&secret]).unwrap(), MARKER);
    std::fs::write(&rules, &forged).unwrap();
    assert!(try_run(&allowed, &[&secret]).is_err());
    assert!(try_run(&cat, &[&secret]).is_err());
    assert!(log(&home, "data").contains("does not verify"));
    // An older valid copy put back is refused as well.
    std::fs::write(&rules, &good).unwrap();
    assert_eq!(try_run(&allowed, &[&secret]).unwrap(), MARKER);
    acl(&home, &d, &["mode", "data", "permissive"]).await;
    // The mount sees serial 2 (permissive: the stranger's read is allowed and logged)...
    assert_eq!(try_run(&cat, &[&secret]).unwrap(), MARKER);
    // ...so serial 1 put back is a rollback.
    std::fs::write(&rules, &good).unwrap();
    assert!(try_run(&allowed, &[&secret]).is_err());
    assert!(log(&home, "data").contains("went back from serial"));
}
