//! System calls on the ciphertext directory. Every path is resolved below the cipher directory
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a symlink or `..` planted in the
//! ciphertext tree cannot lead an operation outside it; the last component is then handled with
//! the `*at` call and `AT_SYMLINK_NOFOLLOW` where the call has one.

use super::Res;
use crate::format::content;
use crate::format::names::{DIRIV_NAME, DirIv, LONGNAME_FILE_MAX, LONGNAME_SUFFIX};
use fuser::{Errno, FileAttr, FileType, INodeNo};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

pub fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc_eio()))
}

const fn libc_eio() -> i32 {
    5
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Opens `rel` (relative to the cipher directory) as a directory, for `*at` calls.
pub fn open_dir(root: BorrowedFd<'_>, rel: &Path) -> Res<OwnedFd> {
    rfs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
    .map_err(errno)
}

/// Opens an entry of `dir` for reading its content (never following a symlink).
pub fn open_in(dir: BorrowedFd<'_>, entry: &OsStr, flags: OFlags, mode: Mode) -> Res<OwnedFd> {
    rfs::openat2(
        dir,
        entry,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        mode,
        RESOLVE,
    )
    .map_err(errno)
}

pub fn stat_in(dir: BorrowedFd<'_>, entry: &OsStr) -> Res<rfs::Stat> {
    rfs::statat(dir, entry, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
}

/// Reads a small whole file of `dir` (a dir IV or a long name), at most `max` bytes.
fn read_small(dir: BorrowedFd<'_>, entry: &OsStr, max: usize) -> Res<Vec<u8>> {
    let fd = open_in(dir, entry, OFlags::RDONLY, Mode::empty())?;
    let mut buf = vec![0u8; max + 1];
    let mut n = 0;
    while n < buf.len() {
        let r = rustix::io::read(&fd, &mut buf[n..]).map_err(errno)?;
        if r == 0 {
            break;
        }
        n += r;
    }
    if n > max {
        return Err(Errno::EIO);
    }
    buf.truncate(n);
    Ok(buf)
}

/// The IV of the directory open as `dir`.
pub fn read_dir_iv(dir: BorrowedFd<'_>) -> Res<DirIv> {
    let buf = read_small(dir, OsStr::new(DIRIV_NAME), 16)?;
    DirIv::parse(&buf).map_err(|e| {
        tracing::warn!(error = %e, "unreadable directory IV");
        Errno::EIO
    })
}

/// The full ciphertext name stored beside a hashed long name.
pub fn read_long_name(dir: BorrowedFd<'_>, hashed: &OsStr) -> Res<Vec<u8>> {
    let mut n = hashed.to_owned();
    n.push(LONGNAME_SUFFIX);
    let buf = read_small(dir, &n, LONGNAME_FILE_MAX)?;
    if buf.is_empty() {
        return Err(Errno::EIO);
    }
    Ok(buf)
}

/// Writes `<hashed>.name` (mode 0444, never changed); `EEXIST` when it is there already.
pub fn write_long_name(dir: BorrowedFd<'_>, hashed: &OsStr, full: &str) -> Res<()> {
    let mut n = hashed.to_owned();
    n.push(LONGNAME_SUFFIX);
    let fd = open_in(
        dir,
        &n,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(0o444),
    )?;
    let bytes = full.as_bytes();
    let mut done = 0;
    while done < bytes.len() {
        match rustix::io::write(&fd, &bytes[done..]) {
            Ok(w) => done += w,
            Err(e) => {
                let _ = rfs::unlinkat(dir, &n, AtFlags::empty());
                return Err(errno(e));
            }
        }
    }
    Ok(())
}

pub fn delete_long_name(dir: BorrowedFd<'_>, hashed: &OsStr) {
    let mut n = hashed.to_owned();
    n.push(LONGNAME_SUFFIX);
    if let Err(e) = rfs::unlinkat(dir, &n, AtFlags::empty()) {
        tracing::warn!(error = %e, "cannot delete a long-name file");
    }
}

/// Writes a fresh `gocryptfs.diriv` into the directory open as `dir`.
pub fn write_dir_iv(dir: BorrowedFd<'_>) -> Res<DirIv> {
    let iv = DirIv::random().map_err(|_| Errno::EIO)?;
    let fd = open_in(
        dir,
        OsStr::new(DIRIV_NAME),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(0o444),
    )?;
    let w = rustix::io::write(&fd, &iv.0).map_err(errno)?;
    if w != iv.0.len() {
        return Err(Errno::EIO);
    }
    Ok(iv)
}

pub fn file_type(mode: u32) -> FileType {
    match mode & 0o170000 {
        0o040000 => FileType::Directory,
        0o120000 => FileType::Symlink,
        0o010000 => FileType::NamedPipe,
        0o020000 => FileType::CharDevice,
        0o060000 => FileType::BlockDevice,
        0o140000 => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    let ns = u32::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0);
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec.unsigned_abs(), ns)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::new(sec.unsigned_abs(), 0))
            .map(|t| t + Duration::from_nanos(u64::from(ns)))
            .unwrap_or(UNIX_EPOCH)
    }
}

/// The clear view's attributes of a backing file; `size` is the plaintext size the caller
/// worked out (file contents and symlink targets are larger on disk).
pub fn attr(st: &rfs::Stat, ino: u64, size: u64) -> FileAttr {
    let mode = st.st_mode;
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec as i64),
        mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind: file_type(mode),
        perm: (mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// The plaintext size of a regular file from its ciphertext size.
pub fn plain_file_size(st: &rfs::Stat) -> u64 {
    content::plain_size(st.st_size as u64)
}

pub fn readlink_in(dir: BorrowedFd<'_>, entry: &OsStr) -> Res<Vec<u8>> {
    let target = rfs::readlinkat(dir, entry, Vec::new()).map_err(errno)?;
    Ok(target.into_bytes())
}

/// `/proc/self/fd/N/entry`: a path for calls that have no `*at` form (the xattr calls), bound
/// to the directory we already opened safely.
pub fn proc_path(dir: &impl AsFd, entry: &OsStr) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
    if entry.as_bytes() != b"." {
        p.push(entry);
    }
    p
}

/// Reads every entry name of the directory open (O_PATH) as `dir`.
pub fn list_dir(dir: BorrowedFd<'_>) -> Res<Vec<(OsString, u64)>> {
    let fd = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    let mut d = rfs::Dir::read_from(&fd).map_err(errno)?;
    let mut out = Vec::new();
    for e in d.by_ref() {
        let e = e.map_err(errno)?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((OsStr::from_bytes(name).to_owned(), e.ino()));
    }
    Ok(out)
}

/// Like [`list_dir`], with each entry's type when the directory reports it.
pub fn list_dir_typed(dir: BorrowedFd<'_>) -> Res<Vec<(OsString, u64, Option<FileType>)>> {
    let fd = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    let mut d = rfs::Dir::read_from(&fd).map_err(errno)?;
    let mut out = Vec::new();
    for e in d.by_ref() {
        let e = e.map_err(errno)?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match e.file_type() {
            rfs::FileType::RegularFile => Some(FileType::RegularFile),
            rfs::FileType::Directory => Some(FileType::Directory),
            rfs::FileType::Symlink => Some(FileType::Symlink),
            rfs::FileType::Fifo => Some(FileType::NamedPipe),
            rfs::FileType::Socket => Some(FileType::Socket),
            rfs::FileType::CharacterDevice => Some(FileType::CharDevice),
            rfs::FileType::BlockDevice => Some(FileType::BlockDevice),
            _ => None,
        };
        out.push((OsStr::from_bytes(name).to_owned(), e.ino(), kind));
    }
    Ok(out)
}

/// `chmod` of an entry that never follows a symlink planted in its place (Linux has no
/// `fchmodat(AT_SYMLINK_NOFOLLOW)`): the entry is opened `O_PATH | O_NOFOLLOW` and changed
/// through its `/proc/self/fd` link. A symlink's mode cannot change (`EOPNOTSUPP`).
pub fn chmod_in(dir: BorrowedFd<'_>, entry: &OsStr, mode: u32) -> Res<()> {
    use std::os::fd::AsRawFd;
    let fd = rfs::openat(
        dir,
        entry,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    let st = rfs::fstat(&fd).map_err(errno)?;
    if file_type(st.st_mode) == FileType::Symlink {
        return Err(Errno::EOPNOTSUPP);
    }
    rfs::chmod(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        Mode::from_raw_mode(mode & 0o7777),
    )
    .map_err(errno)
}
