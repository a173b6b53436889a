//! `keysafe volume`: the built binary against a real server, real FUSE mounts (served by
//! background `keysafe` processes), and the stock gocryptfs tool. Each test unmounts what it
//! mounted, also when it fails.

use crate::{fails_with, keysafe, ok, run, run_with_stdin};
use keysafe_proto::{ClientFingerprint, GroupName, OrgName};
use keysafe_testkit::{TestClient, TestServer};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Long enough never to occur by chance in ciphertext.
pub const MARKER: &[u8] = b"VOLUME-PLAINTEXT-MARKER-5e1d";

pub fn ks(home: &Path, tmp: &Path, args: &[&str]) -> Command {
    let mut c = keysafe(tmp);
    c.args(args).env("KEYSAFE_HOME", home);
    c
}

pub fn is_mounted(p: &Path) -> bool {
    let canon = p.canonicalize().unwrap_or_else(|_| p.to_owned());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m) == canon))
}

/// Unmounts `mnt` when dropped, whatever happened (the serving process then exits).
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for args in [&["-u"][..], &["-u", "-z"][..]] {
            if !is_mounted(&self.0) {
                return;
            }
            let _ = Command::new("fusermount3")
                .args(args)
                .arg(&self.0)
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// A temporary directory with `cipher` and `mnt` inside.
pub struct Dirs {
    pub tmp: tempfile::TempDir,
    pub cipher: PathBuf,
    pub mnt: PathBuf,
}

impl Dirs {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let cipher = tmp.path().join("cipher");
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        Self { tmp, cipher, mnt }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

/// `volume prepare` then `volume mount` (in the background); returns the guard.
pub async fn prepare_and_mount(home: &Path, d: &Dirs, name: &str, extra: &[&str]) -> Unmount {
    let mut args = vec![
        "volume",
        "prepare",
        d.cipher.to_str().unwrap(),
        d.mnt.to_str().unwrap(),
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    ok(&run(ks(home, d.path(), &args)).await);
    mount(home, d).await
}

pub async fn mount(home: &Path, d: &Dirs) -> Unmount {
    let guard = Unmount(d.mnt.clone());
    ok(&run(ks(
        home,
        d.path(),
        &[
            "volume",
            "mount",
            d.cipher.to_str().unwrap(),
            d.mnt.to_str().unwrap(),
        ],
    ))
    .await);
    assert!(is_mounted(&d.mnt));
    guard
}

pub async fn umount(home: &Path, d: &Dirs) {
    ok(&run(ks(
        home,
        d.path(),
        &["volume", "umount", d.mnt.to_str().unwrap()],
    ))
    .await);
    assert!(!is_mounted(&d.mnt));
}

/// The volume's password as `keysafe get` returns it.
pub async fn password(home: &Path, tmp: &Path, deposit: &str, owner: Option<&str>) -> Vec<u8> {
    let mut args = vec!["get", deposit];
    if let Some(o) = owner {
        args.extend(["--owner", o]);
    }
    let out = run(ks(home, tmp, &args)).await;
    ok(&out);
    out.stdout
}

/// Mounts with the stock gocryptfs, the password on its stdin; unmounted when dropped.
pub fn gocryptfs_mount(cipher: &Path, mnt: &Path, password: &[u8]) -> Unmount {
    let mut child = Command::new("gocryptfs")
        .args(["-q", "-passfile", "/dev/stdin"])
        .arg(cipher)
        .arg(mnt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gocryptfs is not installed (Debian package gocryptfs)");
    child.stdin.take().unwrap().write_all(password).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "gocryptfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Unmount(mnt.to_owned())
}

/// Every regular file below `dir`.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            let m = p.symlink_metadata().unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// Replaces the `[cache]` section of client.toml.
pub fn set_cache(home: &Path, section: &str) {
    let path = home.join("client.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let base = text
        .split("\n[cache]")
        .next()
        .unwrap()
        .trim_end()
        .to_owned();
    std::fs::write(&path, format!("{base}\n\n[cache]\n{section}\n")).unwrap();
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn status_json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap()
}

/// Interop from keysafe to gocryptfs through the CLI: what is written through `keysafe volume
/// mount` reads back byte for byte through `gocryptfs -passfile` with the password `keysafe get`
/// returns for the key deposit that `volume status --json` names; the cipher directory holds no
/// clear name or text, and the password is on no file of the host.
#[tokio::test(flavor = "multi_thread")]
async fn prepare_mount_write_then_gocryptfs_reads() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let home = tc.home_dir().to_owned();
    let d = Dirs::new();
    let guard = prepare_and_mount(&home, &d, "data", &[]).await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(d.mnt.join("secret-report.txt"), MARKER).unwrap();
    std::fs::create_dir(d.mnt.join("subdir")).unwrap();
    std::fs::write(d.mnt.join("subdir/big.bin"), &big).unwrap();
    let out = ok(&run(ks(&home, d.path(), &["volume", "status", "--json"])).await);
    let st = status_json(&out);
    assert_eq!(st[0]["name"], "data");
    assert_eq!(st[0]["key_deposit"], "volume/data");
    assert_eq!(st[0]["mounted"], true);
    assert!(st[0]["pid"].as_u64().is_some());
    umount(&home, &d).await;
    drop(guard);

    let pw = password(&home, d.path(), "volume/data", None).await;
    assert_eq!(pw.len(), 43, "a 256-bit password in base64");
    // The password is on no file of the host: not in the cipher directory, the client home
    // (its cache holds the age ciphertext only), the table or the logs.
    for f in files(d.path()).into_iter().chain(files(&home)) {
        let content = std::fs::read(&f).unwrap();
        assert!(
            !contains(&content, &pw),
            "the password is in {}",
            f.display()
        );
        if f.starts_with(&d.cipher) {
            assert!(!contains(&content, MARKER), "clear text in {}", f.display());
            let name = f.file_name().unwrap().to_string_lossy();
            assert!(!name.contains("secret") && !name.contains("big"), "{name}");
        }
    }
    let g = gocryptfs_mount(&d.cipher, &d.mnt, &pw);
    assert_eq!(
        std::fs::read(d.mnt.join("secret-report.txt")).unwrap(),
        MARKER
    );
    assert_eq!(std::fs::read(d.mnt.join("subdir/big.bin")).unwrap(), big);
    drop(g);
}

/// Interop from gocryptfs to keysafe: a directory made by `gocryptfs -init` and filled by
/// gocryptfs is adopted; afterwards only the deposited password opens it.
#[tokio::test(flavor = "multi_thread")]
async fn adopt_a_gocryptfs_directory() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let home = tc.home_dir().to_owned();
    let d = Dirs::new();
    std::fs::create_dir(&d.cipher).unwrap();
    let old = b"an old human password";
    let mut init = Command::new("gocryptfs")
        .args(["-init", "-q", "-scryptn", "10", "-passfile", "/dev/stdin"])
        .arg(&d.cipher)
        .stdin(Stdio::piped())
        .spawn()
        .expect("gocryptfs is not installed");
    init.stdin.take().unwrap().write_all(old).unwrap();
    assert!(init.wait().unwrap().success());
    {
        let _g = gocryptfs_mount(&d.cipher, &d.mnt, old);
        std::fs::write(d.mnt.join("from-gocryptfs.txt"), MARKER).unwrap();
        std::fs::create_dir(d.mnt.join("d")).unwrap();
        std::fs::write(d.mnt.join("d/x"), b"x").unwrap();
    }
    // A wrong password changes nothing.
    let bad = d.path().join("bad-pass");
    std::fs::write(&bad, b"wrong\n").unwrap();
    let conf_before = std::fs::read(d.cipher.join("gocryptfs.conf")).unwrap();
    let o = run(ks(
        &home,
        d.path(),
        &[
            "volume",
            "adopt",
            d.cipher.to_str().unwrap(),
            d.mnt.to_str().unwrap(),
            "--password-file",
            bad.to_str().unwrap(),
        ],
    ))
    .await;
    let err = fails_with(&o, 1);
    assert!(err.contains("password"), "{err}");
    assert_eq!(
        std::fs::read(d.cipher.join("gocryptfs.conf")).unwrap(),
        conf_before
    );
    let o = run(ks(&home, d.path(), &["ls", "--json"])).await;
    assert!(!ok(&o).contains("volume/"), "no deposit was made");

    let o = run_with_stdin(
        ks(
            &home,
            d.path(),
            &[
                "volume",
                "adopt",
                d.cipher.to_str().unwrap(),
                d.mnt.to_str().unwrap(),
                "--name",
                "legacy",
            ],
        ),
        old.to_vec(),
    )
    .await;
    ok(&o);
    let guard = mount(&home, &d).await;
    assert_eq!(
        std::fs::read(d.mnt.join("from-gocryptfs.txt")).unwrap(),
        MARKER
    );
    assert_eq!(std::fs::read(d.mnt.join("d/x")).unwrap(), b"x");
    std::fs::write(d.mnt.join("from-keysafe.txt"), b"new").unwrap();
    umount(&home, &d).await;
    drop(guard);
    // The old password no longer opens it; the deposited one does.
    let mut c = Command::new("gocryptfs");
    c.args(["-q", "-passfile", "/dev/stdin"])
        .arg(&d.cipher)
        .arg(&d.mnt)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(old).unwrap();
    assert!(!child.wait().unwrap().success());
    let _u = Unmount(d.mnt.clone());
    let pw = password(&home, d.path(), "volume/legacy", None).await;
    let g = gocryptfs_mount(&d.cipher, &d.mnt, &pw);
    assert_eq!(
        std::fs::read(d.mnt.join("from-keysafe.txt")).unwrap(),
        b"new"
    );
    drop(g);
}

/// Bad input changes nothing: a non-empty directory, a duplicate name, an unknown recovery
/// group, a missing mount point.
#[tokio::test(flavor = "multi_thread")]
async fn prepare_refuses_bad_input_and_changes_nothing() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let home = tc.home_dir().to_owned();
    let d = Dirs::new();
    std::fs::create_dir(&d.cipher).unwrap();
    std::fs::write(d.cipher.join("stray"), b"x").unwrap();
    let c = d.cipher.to_str().unwrap();
    let err = fails_with(
        &run(ks(&home, d.path(), &["volume", "prepare", c])).await,
        2,
    );
    assert!(err.contains("not empty"), "{err}");
    std::fs::remove_file(d.cipher.join("stray")).unwrap();
    let err = fails_with(
        &run(ks(
            &home,
            d.path(),
            &["volume", "prepare", c, "--recovery", "group:nobody"],
        ))
        .await,
        2,
    );
    assert!(err.contains("group:nobody"), "{err}");
    let err = fails_with(
        &run(ks(
            &home,
            d.path(),
            &["volume", "prepare", c, "/nonexistent/mount/point"],
        ))
        .await,
        2,
    );
    assert!(err.contains("mount point"), "{err}");
    assert_eq!(std::fs::read_dir(&d.cipher).unwrap().count(), 0);
    assert!(!home.join("volumes.toml").exists());
    let out = ok(&run(ks(&home, d.path(), &["ls", "--json"])).await);
    assert!(!out.contains("volume/"), "{out}");
    // A second volume under a name in use is refused.
    ok(&run(ks(
        &home,
        d.path(),
        &["volume", "prepare", c, "--name", "one"],
    ))
    .await);
    let other = d.path().join("other");
    let err = fails_with(
        &run(ks(
            &home,
            d.path(),
            &[
                "volume",
                "prepare",
                other.to_str().unwrap(),
                "--name",
                "one",
            ],
        ))
        .await,
        5,
    );
    assert!(err.contains("already"), "{err}");
    assert!(!other.exists());
}

/// A reboot during a keysafe outage still mounts from the client cache, with a warning; a cache
/// older than max_stale fails clearly.
#[tokio::test(flavor = "multi_thread")]
async fn mounts_from_cache_while_the_server_is_down_and_refuses_a_too_old_cache() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let home = tc.home_dir().to_owned();
    let d = Dirs::new();
    set_cache(&home, "ttl = \"0s\"\nmax_stale = \"1h\"");
    let guard = prepare_and_mount(&home, &d, "data", &[]).await;
    std::fs::write(d.mnt.join("f"), b"kept").unwrap();
    umount(&home, &d).await;
    drop(guard);
    ts.stop().await;

    let guard = mount(&home, &d).await;
    assert_eq!(std::fs::read(d.mnt.join("f")).unwrap(), b"kept");
    let log = std::fs::read_to_string(home.join("volumes/data.log")).unwrap();
    assert!(log.contains("using the cached key"), "{log}");
    umount(&home, &d).await;
    drop(guard);

    set_cache(&home, "ttl = \"0s\"\nmax_stale = \"1s\"");
    std::thread::sleep(std::time::Duration::from_millis(1500));
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
    let err = fails_with(&o, 6);
    assert!(err.contains("connect") || err.contains("server"), "{err}");
    assert!(!is_mounted(&d.mnt));
}

/// The key is shared with a recovery group at prepare time: after the host is lost, a member of
/// the group mounts the volume with the lost host's deposit.
#[tokio::test(flavor = "multi_thread")]
async fn a_recovery_group_member_recovers_the_volume() {
    let ts = TestServer::start().await;
    let host = ts.new_client("acme").await;
    let rescuer: TestClient = ts.new_client("acme").await;
    keysafe_client::vault::admin_create_group(
        &ts.admin,
        &OrgName::parse("acme").unwrap(),
        &GroupName::parse("recovery").unwrap(),
        std::slice::from_ref(&rescuer.fingerprint),
    )
    .await
    .unwrap();
    let d = Dirs::new();
    let home = host.home_dir().to_owned();
    let guard = prepare_and_mount(&home, &d, "data", &["--recovery", "group:recovery"]).await;
    std::fs::write(d.mnt.join("ledger"), MARKER).unwrap();
    umount(&home, &d).await;
    drop(guard);
    let out = ok(&run(ks(&home, d.path(), &["acl", "volume/data", "--json"])).await);
    assert!(out.contains("group:recovery"), "{out}");

    // The host is gone; the rescuer mounts its cipher directory with the host's deposit.
    let fp: ClientFingerprint = host.fingerprint.clone();
    drop(host);
    let rhome = rescuer.home_dir().to_owned();
    let guard = Unmount(d.mnt.clone());
    ok(&run(ks(
        &rhome,
        d.path(),
        &[
            "volume",
            "mount",
            d.cipher.to_str().unwrap(),
            d.mnt.to_str().unwrap(),
            "--key",
            "volume/data",
            "--owner",
            fp.as_str(),
        ],
    ))
    .await);
    assert_eq!(std::fs::read(d.mnt.join("ledger")).unwrap(), MARKER);
    drop(guard);
    // A client outside the group cannot.
    let stranger = ts.new_client("acme").await;
    let o = run(ks(
        stranger.home_dir(),
        d.path(),
        &["get", "volume/data", "--owner", fp.as_str()],
    ))
    .await;
    assert!(!o.status.success());
}

/// `status --integrity` passes on a good volume and names each failure: a key deposit that is
/// gone, a mount point that is gone.
#[tokio::test(flavor = "multi_thread")]
async fn status_integrity_checks_each_volume() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let home = tc.home_dir().to_owned();
    let d = Dirs::new();
    ok(&run(ks(
        &home,
        d.path(),
        &[
            "volume",
            "prepare",
            d.cipher.to_str().unwrap(),
            d.mnt.to_str().unwrap(),
            "--name",
            "data",
        ],
    ))
    .await);
    let out = ok(&run(ks(
        &home,
        d.path(),
        &["volume", "status", "--integrity", "--json"],
    ))
    .await);
    let st = status_json(&out);
    assert_eq!(st[0]["integrity"]["ok"], true, "{out}");
    assert_eq!(st[0]["integrity"]["key_opens_volume"], true);
    std::fs::remove_dir(&d.mnt).unwrap();
    ok(&run(ks(&home, d.path(), &["rm", "volume/data"])).await);
    let o = run(ks(
        &home,
        d.path(),
        &["volume", "status", "--integrity", "--json"],
    ))
    .await;
    assert!(!o.status.success());
    let st = status_json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(st[0]["integrity"]["key_in_keysafe"], false);
    assert_eq!(st[0]["integrity"]["mountpoint_ok"], false);
    // The key is gone from keysafe, so the volume does not mount (not even from the cache:
    // the server's answer stands).
    std::fs::create_dir(&d.mnt).unwrap();
    let o = run(ks(&home, d.path(), &["volume", "mount", "data"])).await;
    let _u = Unmount(d.mnt.clone());
    assert!(!o.status.success());
    assert!(!is_mounted(&d.mnt));
    let _ = std::fs::set_permissions(&d.mnt, std::fs::Permissions::from_mode(0o755));
}

/// `mount --all` mounts the volumes marked for boot and leaves the others; `umount --all`
/// unmounts what it mounted.
#[tokio::test(flavor = "multi_thread")]
async fn mount_all_mounts_the_boot_volumes() {
    let ts = TestServer::start().await;
    let tc = ts.new_client("acme").await;
    let home = tc.home_dir().to_owned();
    let a = Dirs::new();
    let b = Dirs::new();
    let prep = |d: &Dirs, name: &str, auto: bool| {
        let mut args = vec![
            "volume".to_owned(),
            "prepare".into(),
            d.cipher.to_str().unwrap().into(),
            d.mnt.to_str().unwrap().into(),
            "--name".into(),
            name.into(),
        ];
        if !auto {
            args.push("--no-auto".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ks(&home, a.path(), &refs)
    };
    ok(&run(prep(&a, "boot", true)).await);
    ok(&run(prep(&b, "manual", false)).await);
    let _ga = Unmount(a.mnt.clone());
    let _gb = Unmount(b.mnt.clone());
    ok(&run(ks(&home, a.path(), &["volume", "mount", "--all"])).await);
    assert!(is_mounted(&a.mnt));
    assert!(!is_mounted(&b.mnt));
    // Mounting again is not an error: it is mounted already.
    ok(&run(ks(&home, a.path(), &["volume", "mount", "--all"])).await);
    ok(&run(ks(&home, a.path(), &["volume", "umount", "--all"])).await);
    assert!(!is_mounted(&a.mnt));
}
