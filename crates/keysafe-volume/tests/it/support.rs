//! Test helpers: a keysafe mount in this process and a stock gocryptfs mount, both unmounted when
//! dropped (never left behind after a test), and a tree of files that exercises the format
//! (long names, holes, links, xattrs, odd sizes) with a checker for it.

use keysafe_volume::format::{Password, VolumeConfig};
use keysafe_volume::fs::{AccessGate, MountConfig, OpenGate, VolumeFs};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// A text that must never appear in a cipher directory.
pub const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a9c";

pub struct Dirs {
    _tmp: tempfile::TempDir,
    pub cipher: PathBuf,
    pub mnt: PathBuf,
}

impl Dirs {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let cipher = tmp.path().join("cipher");
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&cipher).expect("cipher dir");
        std::fs::create_dir(&mnt).expect("mount point");
        Self {
            _tmp: tmp,
            cipher,
            mnt,
        }
    }
}

pub fn is_mounted(p: &Path) -> bool {
    let canon = p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| Path::new(m) == canon.as_path())
    })
}

fn fusermount_u(mnt: &Path) {
    for args in [&["-u"][..], &["-u", "-z"][..]] {
        if !is_mounted(mnt) {
            return;
        }
        let _ = Command::new("fusermount3")
            .args(args)
            .arg(mnt)
            .stderr(Stdio::null())
            .status();
    }
}

/// keysafe's file system mounted in this process.
pub struct KsMount {
    session: Option<fuser::BackgroundSession>,
    pub mnt: PathBuf,
}

impl KsMount {
    pub fn new(cipher: &Path, mnt: &Path, password: &Password) -> Self {
        Self::with_gate(cipher, mnt, password, Arc::new(OpenGate))
    }

    pub fn with_gate(
        cipher: &Path,
        mnt: &Path,
        password: &Password,
        gate: Arc<dyn AccessGate>,
    ) -> Self {
        let cfg = VolumeConfig::load(cipher).expect("config");
        let master = cfg.unlock(password).expect("unlock");
        let keys = cfg.keys(&master).expect("keys");
        let fs = VolumeFs::new(cipher, keys, gate).expect("file system");
        let session = keysafe_volume::fs::mount(
            fs,
            mnt,
            &MountConfig {
                fs_name: "keysafe-test".into(),
                ..MountConfig::default()
            },
        )
        .expect("mount");
        assert!(is_mounted(mnt), "mounted at {}", mnt.display());
        Self {
            session: Some(session),
            mnt: mnt.to_owned(),
        }
    }

    pub fn unmount(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(s) = self.session.take() {
            drop(s);
        }
        fusermount_u(&self.mnt);
    }
}

impl Drop for KsMount {
    fn drop(&mut self) {
        self.stop();
    }
}

fn gocryptfs() -> Command {
    // Fails the test (never skips it) when the tool is missing.
    assert!(
        Command::new("gocryptfs")
            .arg("-version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "gocryptfs is not installed (Debian package gocryptfs; .ci/run installs it)"
    );
    Command::new("gocryptfs")
}

/// Runs gocryptfs with the password on its standard input (`-passfile /dev/stdin`): the
/// password never touches a disk.
fn run_with_password(mut cmd: Command, password: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gocryptfs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(password)
        .expect("write password");
    child.wait_with_output().expect("gocryptfs")
}

/// `gocryptfs -init` with a cheap scrypt cost.
pub fn gocryptfs_init(cipher: &Path, password: &[u8]) {
    let mut c = gocryptfs();
    c.args(["-init", "-q", "-scryptn", "10", "-passfile", "/dev/stdin"])
        .arg(cipher);
    let out = run_with_password(c, password);
    assert!(
        out.status.success(),
        "gocryptfs -init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stock gocryptfs mounted (as its own daemon).
pub struct GoMount {
    pub mnt: PathBuf,
}

impl GoMount {
    pub fn new(cipher: &Path, mnt: &Path, password: &[u8]) -> Self {
        let mut c = gocryptfs();
        c.args(["-q", "-passfile", "/dev/stdin"])
            .arg(cipher)
            .arg(mnt);
        let out = run_with_password(c, password);
        assert!(
            out.status.success(),
            "gocryptfs mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(is_mounted(mnt));
        Self {
            mnt: mnt.to_owned(),
        }
    }

    /// Mounting with `password` fails.
    pub fn refuses(cipher: &Path, mnt: &Path, password: &[u8]) -> bool {
        let mut c = gocryptfs();
        c.args(["-q", "-passfile", "/dev/stdin"])
            .arg(cipher)
            .arg(mnt);
        let out = run_with_password(c, password);
        let refused = !out.status.success();
        fusermount_u(mnt);
        refused
    }
}

impl Drop for GoMount {
    fn drop(&mut self) {
        fusermount_u(&self.mnt);
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

pub const LONG_NAME: &str = "long-name-0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-end";
pub const SPARSE_AT: u64 = 10 * 1024 * 1024 + 5000;

/// Fills `root` (a mounted clear view) with the test tree.
pub fn fill_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| std::fs::write(root.join(p), data).expect(p);
    w("hello.txt", b"hello world\n");
    w("marker.txt", MARKER);
    w("empty", b"");
    w("block", &bytes(1, 4096));
    w("block-plus-one", &bytes(2, 4097));
    std::fs::create_dir_all(root.join("dir/sub")).expect("mkdir");
    w("dir/sub/deep.bin", &bytes(3, 100_000));
    w(LONG_NAME, b"long name content");
    std::fs::create_dir(root.join(format!("{LONG_NAME}-dir"))).expect("long dir");
    w(
        &format!("{LONG_NAME}-dir/inner"),
        b"inside a long-named dir",
    );
    w(&"n".repeat(255), b"255");
    w("ünïcödé ✓", b"unicode");
    std::os::unix::fs::symlink("hello.txt", root.join("link")).expect("symlink");
    std::os::unix::fs::symlink("/etc/hostname", root.join("abs-link")).expect("symlink");
    std::fs::hard_link(root.join("hello.txt"), root.join("dir/hard")).expect("hard link");
    let f = std::fs::File::create(root.join("sparse")).expect("sparse");
    {
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"!", SPARSE_AT).expect("sparse write");
    }
    w("private", b"mode 0600");
    std::fs::set_permissions(root.join("private"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    rustix::fs::setxattr(
        root.join("hello.txt"),
        "user.comment",
        b"an xattr value",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("setxattr");
}

/// Checks that `root` holds exactly what [`fill_tree`] made.
pub fn check_tree(root: &Path) {
    let r = |p: &str| std::fs::read(root.join(p)).unwrap_or_else(|e| panic!("read {p}: {e}"));
    assert_eq!(r("hello.txt"), b"hello world\n");
    assert_eq!(r("marker.txt"), MARKER);
    assert_eq!(r("empty"), b"");
    assert_eq!(r("block"), bytes(1, 4096));
    assert_eq!(r("block-plus-one"), bytes(2, 4097));
    assert_eq!(r("dir/sub/deep.bin"), bytes(3, 100_000));
    assert_eq!(r(LONG_NAME), b"long name content");
    assert_eq!(
        r(&format!("{LONG_NAME}-dir/inner")),
        b"inside a long-named dir"
    );
    assert_eq!(r(&"n".repeat(255)), b"255");
    assert_eq!(r("ünïcödé ✓"), b"unicode");
    assert_eq!(
        std::fs::read_link(root.join("link")).expect("readlink"),
        Path::new("hello.txt")
    );
    assert_eq!(r("link"), b"hello world\n");
    assert_eq!(
        std::fs::read_link(root.join("abs-link")).expect("readlink"),
        Path::new("/etc/hostname")
    );
    let a = std::fs::metadata(root.join("hello.txt")).expect("stat");
    let b = std::fs::metadata(root.join("dir/hard")).expect("stat");
    assert_eq!(a.ino(), b.ino(), "hard links share an inode");
    assert_eq!(a.nlink(), 2);
    let sparse = r("sparse");
    assert_eq!(sparse.len() as u64, SPARSE_AT + 1);
    assert!(sparse[..SPARSE_AT as usize].iter().all(|&b| b == 0));
    assert_eq!(sparse[SPARSE_AT as usize], b'!');
    assert_eq!(
        std::fs::metadata(root.join("private"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let mut v = [0u8; 64];
    let n =
        rustix::fs::getxattr(root.join("hello.txt"), "user.comment", &mut v[..]).expect("getxattr");
    assert_eq!(&v[..n], b"an xattr value");
    let mut names: Vec<String> = std::fs::read_dir(root)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want = vec![
        "abs-link".to_owned(),
        "block".into(),
        "block-plus-one".into(),
        "dir".into(),
        "empty".into(),
        "hello.txt".into(),
        "link".into(),
        "marker.txt".into(),
        "private".into(),
        "sparse".into(),
        "ünïcödé ✓".into(),
        LONG_NAME.into(),
        format!("{LONG_NAME}-dir"),
        "n".repeat(255),
    ];
    want.sort();
    assert_eq!(names, want);
}

/// Every path below `dir` (names and contents are checked by the caller).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readdir") {
            let p = e.expect("entry").path();
            if p.symlink_metadata().expect("lstat").is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Fails if any name or file in `cipher` shows a clear name, the marker or the password.
pub fn assert_nothing_in_clear(cipher: &Path, password: &[u8]) {
    let clear_names = [
        "hello",
        "marker",
        "long-name",
        "sparse",
        "private",
        "ünïcödé",
    ];
    for p in walk(cipher) {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        for c in clear_names {
            assert!(
                !name.contains(c),
                "clear name {c:?} in the cipher directory: {}",
                p.display()
            );
        }
        let meta = p.symlink_metadata().expect("lstat");
        let content = if meta.file_type().is_symlink() {
            std::fs::read_link(&p)
                .expect("readlink")
                .into_os_string()
                .into_encoded_bytes()
        } else if meta.is_file() {
            std::fs::read(&p).expect("read")
        } else {
            continue;
        };
        for needle in [MARKER, password, b"hello world", b"hello.txt"] {
            assert!(
                !content.windows(needle.len()).any(|w| w == needle),
                "clear text in {}",
                p.display()
            );
        }
    }
}
