//! Ordinary file system behaviour through a keysafe mount: offsets, truncation, holes, renames,
//! links, permissions, extended attributes, big directories, long names.

use crate::support::*;
use keysafe_volume::format::{Password, init_volume};
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::process::Command;

fn mounted() -> (Dirs, KsMount, Password) {
    let d = Dirs::new();
    let pw = Password::generate().unwrap();
    init_volume(&d.cipher, &pw, "keysafe-test", 10).unwrap();
    let m = KsMount::new(&d.cipher, &d.mnt, &pw);
    (d, m, pw)
}

/// Random writes at random offsets and truncations against an in-memory model; the file is
/// compared after every step and once more through a fresh mount.
#[test]
fn writes_at_offsets_and_truncation_match_a_model() {
    let (d, m, pw) = mounted();
    let path = m.mnt.join("model");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut model: Vec<u8> = Vec::new();
    let mut x: u64 = 42;
    let mut next = |n: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        (x >> 33) % n
    };
    for step in 0..300u64 {
        match next(10) {
            0..=6 => {
                let off = next(70_000);
                // Now and then a write large enough to be encrypted on two threads.
                let len = if step % 17 == 0 {
                    1 + next(400_000) as usize
                } else {
                    1 + next(9_000) as usize
                };
                let data = bytes(step, len);
                f.write_all_at(&data, off).unwrap();
                let end = off as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            7 | 8 => {
                let n = next(80_000) as usize;
                f.set_len(n as u64).unwrap();
                model.resize(n, 0);
            }
            _ => {
                f.set_len(0).unwrap();
                model.clear();
            }
        }
        assert_eq!(
            f.metadata().unwrap().len(),
            model.len() as u64,
            "step {step}"
        );
        let mut back = vec![0u8; model.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert!(back == model, "content differs after step {step}");
    }
    drop(f);
    m.unmount();
    let m = KsMount::new(&d.cipher, &d.mnt, &pw);
    assert!(std::fs::read(m.mnt.join("model")).unwrap() == model);
}

/// A sparse file of several GB: the size is right, the holes read as zeros, and the cipher file
/// stays sparse too.
#[test]
fn large_sparse_files() {
    let (d, m, _pw) = mounted();
    let path = m.mnt.join("big");
    let f = std::fs::File::create(&path).unwrap();
    let far: u64 = 6 * 1024 * 1024 * 1024 + 123;
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"tail", far).unwrap();
    drop(f);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), far + 4);
    let f = std::fs::File::open(&path).unwrap();
    let mut buf = vec![1u8; 8192];
    f.read_exact_at(&mut buf, 4 * 1024 * 1024 * 1024).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    let mut tail = [0u8; 4];
    f.read_exact_at(&mut tail, far).unwrap();
    assert_eq!(&tail, b"tail");
    let cipher_file = walk(&d.cipher)
        .into_iter()
        .find(|p| p.metadata().map(|m| m.len() > far).unwrap_or(false))
        .expect("the cipher file");
    assert!(
        cipher_file.metadata().unwrap().blocks() < 1024,
        "the cipher file is sparse"
    );
    // Growing and shrinking by truncation keeps the content.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(10_000).unwrap();
    drop(f);
    let data = std::fs::read(&path).unwrap();
    assert_eq!(data.len(), 10_000);
    assert_eq!(&data[..4], b"head");
    assert!(data[4..].iter().all(|&b| b == 0));
}

#[test]
fn renames_with_short_and_long_names() {
    let (d, m, _pw) = mounted();
    let r = &m.mnt;
    std::fs::write(r.join("a"), b"A").unwrap();
    std::fs::rename(r.join("a"), r.join(LONG_NAME)).unwrap();
    assert_eq!(std::fs::read(r.join(LONG_NAME)).unwrap(), b"A");
    std::fs::create_dir(r.join("d1")).unwrap();
    std::fs::rename(r.join(LONG_NAME), r.join("d1/b")).unwrap();
    assert_eq!(std::fs::read(r.join("d1/b")).unwrap(), b"A");
    // Over an existing file.
    std::fs::write(r.join("c"), b"C").unwrap();
    std::fs::rename(r.join("c"), r.join("d1/b")).unwrap();
    assert_eq!(std::fs::read(r.join("d1/b")).unwrap(), b"C");
    // A directory with content, into a long name, then over an empty directory.
    std::fs::write(r.join("d1/x"), b"X").unwrap();
    std::fs::rename(r.join("d1"), r.join(format!("{LONG_NAME}-d"))).unwrap();
    assert_eq!(
        std::fs::read(r.join(format!("{LONG_NAME}-d/x"))).unwrap(),
        b"X"
    );
    std::fs::create_dir(r.join("empty")).unwrap();
    std::fs::rename(r.join(format!("{LONG_NAME}-d")), r.join("empty")).unwrap();
    assert_eq!(std::fs::read(r.join("empty/x")).unwrap(), b"X");
    // Not over a non-empty directory.
    std::fs::create_dir(r.join("full")).unwrap();
    std::fs::write(r.join("full/f"), b"").unwrap();
    std::fs::create_dir(r.join("other")).unwrap();
    let e = std::fs::rename(r.join("other"), r.join("full")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DirectoryNotEmpty);
    let mut names: Vec<_> = std::fs::read_dir(r)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["empty", "full", "other"]);
    // No stray long-name files are left behind in the cipher directory.
    let longnames = walk(&d.cipher)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("gocryptfs.longname"))
        .count();
    assert_eq!(longnames, 0);
}

#[test]
fn links_and_unlinked_open_files() {
    let (_d, m, _pw) = mounted();
    let r = &m.mnt;
    std::fs::write(r.join("f"), b"one").unwrap();
    std::fs::hard_link(r.join("f"), r.join("g")).unwrap();
    std::fs::hard_link(r.join("f"), r.join(LONG_NAME)).unwrap();
    assert_eq!(std::fs::metadata(r.join("f")).unwrap().nlink(), 3);
    std::fs::remove_file(r.join("f")).unwrap();
    std::fs::write(r.join("g"), b"two").unwrap();
    assert_eq!(std::fs::read(r.join(LONG_NAME)).unwrap(), b"two");
    std::os::unix::fs::symlink(LONG_NAME, r.join("s")).unwrap();
    assert_eq!(std::fs::read(r.join("s")).unwrap(), b"two");
    assert_eq!(
        std::fs::symlink_metadata(r.join("s")).unwrap().len(),
        LONG_NAME.len() as u64
    );
    // An open file that is unlinked stays usable through its descriptor.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(r.join("tmp"))
        .unwrap();
    std::fs::remove_file(r.join("tmp")).unwrap();
    f.write_all_at(b"still here", 0).unwrap();
    let mut buf = [0u8; 10];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"still here");
    assert_eq!(f.metadata().unwrap().len(), 10);
}

/// The kernel enforces mode bits for other users (default_permissions), and files created by a
/// user belong to that user.
#[test]
fn permissions_and_ownership() {
    let (_d, m, _pw) = mounted();
    let r = &m.mnt;
    std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(r.join("secret"), b"root only").unwrap();
    std::fs::set_permissions(r.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_nobody(&["cat", r.join("secret").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    let out = as_nobody(&["touch", r.join("mine").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::metadata(r.join("mine")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    std::os::unix::fs::chown(r.join("secret"), Some(65534), None).unwrap();
    let out = as_nobody(&["cat", r.join("secret").to_str().unwrap()]);
    assert_eq!(out.stdout, b"root only");
    // Exact modes despite this process's umask.
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(r.join("wide"))
        .unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(0o666))
        .unwrap();
    assert_eq!(
        std::fs::metadata(r.join("wide"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o666
    );
}

#[test]
fn extended_attributes() {
    let (_d, m, _pw) = mounted();
    let p = m.mnt.join("x");
    std::fs::write(&p, b"").unwrap();
    let flags = rustix::fs::XattrFlags::empty();
    rustix::fs::setxattr(&p, "user.a", b"1", flags).unwrap();
    rustix::fs::setxattr(&p, "user.b", b"", flags).unwrap();
    rustix::fs::setxattr(&p, "user.c", &bytes(5, 3000), flags).unwrap();
    let mut list = vec![0u8; 256];
    let n = rustix::fs::listxattr(&p, &mut list[..]).unwrap();
    let mut names: Vec<&[u8]> = list[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .collect();
    names.sort();
    assert_eq!(names, [&b"user.a"[..], b"user.b", b"user.c"]);
    let mut v = vec![0u8; 4096];
    let n = rustix::fs::getxattr(&p, "user.c", &mut v[..]).unwrap();
    assert_eq!(&v[..n], &bytes(5, 3000)[..]);
    assert_eq!(rustix::fs::getxattr(&p, "user.b", &mut v[..]).unwrap(), 0);
    rustix::fs::removexattr(&p, "user.a").unwrap();
    assert_eq!(
        rustix::fs::getxattr(&p, "user.a", &mut v[..]).unwrap_err(),
        rustix::io::Errno::NODATA
    );
    let create_only = rustix::fs::XattrFlags::CREATE;
    assert_eq!(
        rustix::fs::setxattr(&p, "user.b", b"x", create_only).unwrap_err(),
        rustix::io::Errno::EXIST
    );
}

#[test]
fn thousands_of_entries_and_long_names() {
    let (d, m, _pw) = mounted();
    let dir = m.mnt.join("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..3000 {
        let name = if i % 10 == 0 {
            format!("{i:05}-{}", "x".repeat(240))
        } else {
            format!("file-{i:05}")
        };
        std::fs::write(dir.join(&name), i.to_string()).unwrap();
    }
    let mut count = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let content = std::fs::read(e.path()).unwrap();
        let name = e.file_name().into_string().unwrap();
        let i: usize = name
            .trim_start_matches("file-")
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(content, i.to_string().as_bytes());
        count += 1;
    }
    assert_eq!(count, 3000);
    let e = std::fs::write(dir.join("y".repeat(256)), b"").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(36), "ENAMETOOLONG");
    // rmdir refuses a non-empty directory; an emptied one goes, IV and all.
    let e = std::fs::remove_dir(&dir).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DirectoryNotEmpty);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!dir.exists());
    let left: Vec<_> = walk(&d.cipher);
    assert_eq!(
        left.len(),
        2,
        "only the config and the root IV remain: {left:?}"
    );
}

/// A clear path near PATH_MAX is longer than PATH_MAX in the cipher directory (encrypted names
/// grow): it still works (pjdfstest's `enametoolong_path` cases build such paths).
#[test]
fn clear_paths_near_path_max() {
    let (d, m, _pw) = mounted();
    let mut p = m.mnt.clone();
    let mut clear_len = p.as_os_str().len();
    // 170 bytes encrypt to 235 characters: not hashed as a long name, longer than in clear.
    let comp = "d".repeat(170);
    while clear_len + comp.len() + 1 < 3900 {
        p.push(&comp);
        clear_len += comp.len() + 1;
        std::fs::create_dir(&p).unwrap();
    }
    std::fs::write(p.join("leaf"), b"deep").unwrap();
    assert_eq!(std::fs::read(p.join("leaf")).unwrap(), b"deep");
    // find(1) walks with directory descriptors, so it can list paths over PATH_MAX.
    let out = Command::new("find").arg(&d.cipher).output().unwrap();
    let deepest = out
        .stdout
        .split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap();
    assert!(
        deepest > 4096,
        "the cipher path is longer than PATH_MAX: {deepest}"
    );
    std::fs::remove_file(p.join("leaf")).unwrap();
}
