//! Names and metadata: lookup, attributes, creation of every kind of entry, removal, rename,
//! hard links and directory listings, with gocryptfs's rules for directory IVs (a fresh
//! `gocryptfs.diriv` in every new directory, moved aside on rmdir) and long names (the
//! `.name` file is written before the entry and removed after it).

use super::backing::{self, errno};
use super::nodes::{Alias, ROOT};
use super::{Access, DirEntryOut, Res, VolumeFs};
use crate::format::names::{self, DIRIV_NAME, StoredKind, StoredName};
use crate::format::{DirIv, FormatError};
use fuser::{Errno, FileAttr, FileHandle, FileType, Request, TimeOrNow};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RenameFlags as RRenameFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The longest piece of a cipher path opened at once (PATH_MAX is 4096).
const PATH_CHUNK: usize = 3072;

/// The attribute changes of one setattr.
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
}

fn name_errno(e: FormatError) -> Errno {
    match e {
        FormatError::NameTooLong => Errno::ENAMETOOLONG,
        FormatError::InvalidName => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

fn timespec(t: Option<TimeOrNow>) -> rfs::Timespec {
    match t {
        None => rfs::Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => rfs::Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let (sec, nsec) = match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => (
                    i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    i64::from(d.subsec_nanos()),
                ),
                Err(e) => {
                    let d = e.duration();
                    let mut sec = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                    let mut nsec = i64::from(d.subsec_nanos());
                    if nsec > 0 {
                        sec -= 1;
                        nsec = 1_000_000_000 - nsec;
                    }
                    (sec, nsec)
                }
            };
            rfs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            }
        }
    }
}

impl VolumeFs {
    /// The directory (as an `O_PATH` descriptor) backing inode `ino`. Encrypted names are
    /// longer than clear ones, so a clear path under PATH_MAX can be over it in the cipher
    /// directory: the path is opened in pieces of at most [`PATH_CHUNK`] bytes, each below
    /// the last (one piece for ordinary depths).
    pub(super) fn open_dir_of(&self, ino: u64) -> Res<OwnedFd> {
        let parts = self.nodes.stored_components(ino)?;
        let mut cur: Option<OwnedFd> = None;
        let mut chunk = PathBuf::new();
        for p in parts {
            if !chunk.as_os_str().is_empty() && chunk.as_os_str().len() + p.len() + 1 > PATH_CHUNK {
                let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(self.root.as_fd());
                cur = Some(backing::open_dir(base, &chunk)?);
                chunk.clear();
            }
            chunk.push(p);
        }
        if chunk.as_os_str().is_empty() {
            chunk.push(".");
        }
        let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(self.root.as_fd());
        backing::open_dir(base, &chunk)
    }

    pub(super) fn dir_iv_of(&self, ino: u64, dir: BorrowedFd<'_>) -> Res<DirIv> {
        if let Some(iv) = self.nodes.dir_iv(ino)? {
            return Ok(iv);
        }
        let iv = backing::read_dir_iv(dir)?;
        self.nodes.set_dir_iv(ino, iv);
        Ok(iv)
    }

    /// The parent directory of `ino` and its entry name there (for the root: itself and ".").
    pub(super) fn parent_and_entry(&self, ino: u64) -> Res<(OwnedFd, OsString)> {
        if ino == ROOT {
            return Ok((
                backing::open_dir(self.root.as_fd(), Path::new("."))?,
                OsString::from("."),
            ));
        }
        let alias = self.nodes.entry(ino)?;
        Ok((self.open_dir_of(alias.parent)?, alias.entry))
    }

    /// The stored name of `name` in directory `parent` (opened as `dir`).
    fn stored(&self, parent: u64, dir: BorrowedFd<'_>, name: &OsStr) -> Res<StoredName> {
        let iv = self.dir_iv_of(parent, dir)?;
        self.keys
            .names
            .encrypt(name.as_bytes(), &iv)
            .map_err(name_errno)
    }

    fn decrypt_target(&self, stored: &[u8]) -> Res<Vec<u8>> {
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let bin = self.keys.names.b64_decode(stored).map_err(|_| Errno::EIO)?;
        self.keys.content.open_value(&bin).map_err(|e| {
            tracing::warn!(error = %e, "cannot decrypt a symlink target");
            Errno::EIO
        })
    }

    /// The clear-view attributes of the entry `entry` of `dir`.
    fn attr_of(&self, st: &rfs::Stat, dir: BorrowedFd<'_>, entry: &OsStr) -> Res<FileAttr> {
        let ino = self.inos.map(st.st_dev, st.st_ino);
        let kind = backing::file_type(st.st_mode);
        let size = match kind {
            FileType::RegularFile => backing::plain_file_size(st),
            FileType::Symlink => {
                let t = backing::readlink_in(dir, entry)?;
                self.decrypt_target(&t).map(|p| p.len() as u64).unwrap_or(0)
            }
            _ => st.st_size as u64,
        };
        Ok(backing::attr(st, ino, size))
    }

    pub(super) fn lookup_child(&self, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let dir = self.open_dir_of(parent)?;
        let stored = self.stored(parent, dir.as_fd(), name)?;
        let entry = OsString::from(stored.entry());
        let st = backing::stat_in(dir.as_fd(), &entry)?;
        let attr = self.attr_of(&st, dir.as_fd(), &entry)?;
        self.nodes.remember(
            attr.ino.0,
            attr.kind,
            Alias {
                parent,
                entry,
                name: name.to_owned(),
            },
        )?;
        Ok(attr)
    }

    pub(super) fn getattr_of(&self, ino: u64, fh: Option<FileHandle>) -> Res<FileAttr> {
        let open = fh.and_then(|fh| self.file_handle(fh).ok());
        if let Some(f) = open {
            return self.fstat_attr(&f.file);
        }
        match self.parent_and_entry(ino) {
            Ok((dir, entry)) => {
                let st = backing::stat_in(dir.as_fd(), &entry)?;
                self.attr_of(&st, dir.as_fd(), &entry)
            }
            // Unlinked while open (fstat carries no handle): ask the open descriptor.
            Err(e) => match self.open_file_of(ino) {
                Some(f) => self.fstat_attr(&f.file),
                None => Err(e),
            },
        }
    }

    fn fstat_attr(&self, file: &File) -> Res<FileAttr> {
        let st = rfs::fstat(file).map_err(errno)?;
        Ok(backing::attr(
            &st,
            self.inos.map(st.st_dev, st.st_ino),
            backing::plain_file_size(&st),
        ))
    }

    /// Attribute changes on the open descriptor of a file that has no name any more.
    fn setattr_unlinked(&self, file: &File, a: &SetAttr) -> Res<()> {
        if let Some(mode) = a.mode {
            rfs::fchmod(file, Mode::from_raw_mode(mode & 0o7777)).map_err(errno)?;
        }
        if a.uid.is_some() || a.gid.is_some() {
            rfs::fchown(
                file,
                a.uid.map(rfs::Uid::from_raw),
                a.gid.map(rfs::Gid::from_raw),
            )
            .map_err(errno)?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let ts = rfs::Timestamps {
                last_access: timespec(a.atime),
                last_modification: timespec(a.mtime),
            };
            rfs::futimens(file, &ts).map_err(errno)?;
        }
        Ok(())
    }

    pub(super) fn setattr_of(&self, ino: u64, a: SetAttr, fh: Option<FileHandle>) -> Res<FileAttr> {
        if let Some(size) = a.size {
            self.truncate_ino(ino, size, fh)?;
        }
        let (dir, entry) = match self.parent_and_entry(ino) {
            Ok(x) => x,
            Err(e) => {
                let f = self.open_file_of(ino).ok_or(e)?;
                self.setattr_unlinked(&f.file, &a)?;
                return self.fstat_attr(&f.file);
            }
        };
        if let Some(mode) = a.mode {
            backing::chmod_in(dir.as_fd(), &entry, mode)?;
        }
        if a.uid.is_some() || a.gid.is_some() {
            rfs::chownat(
                dir.as_fd(),
                &entry,
                a.uid.map(rfs::Uid::from_raw),
                a.gid.map(rfs::Gid::from_raw),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno)?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let ts = rfs::Timestamps {
                last_access: timespec(a.atime),
                last_modification: timespec(a.mtime),
            };
            rfs::utimensat(dir.as_fd(), &entry, &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
        }
        self.getattr_of(ino, fh)
    }

    fn truncate_ino(&self, ino: u64, size: u64, fh: Option<FileHandle>) -> Res<()> {
        let open = fh.and_then(|fh| self.file_handle(fh).ok()).or_else(|| {
            self.open_file_of(ino)
                .filter(|_| self.nodes.entry(ino).is_err())
        });
        if let Some(f) = open {
            let mut inner = f.state.lock.write().map_err(|_| Errno::EIO)?;
            return super::files::truncate(&self.keys.content, &mut inner, &f.file, size);
        }
        if self.nodes.kind(ino)? != FileType::RegularFile {
            return Err(Errno::EINVAL);
        }
        let (dir, entry) = self.parent_and_entry(ino)?;
        let fd = backing::open_in(dir.as_fd(), &entry, OFlags::RDWR, Mode::empty())?;
        let file = File::from(fd);
        let state = self.state_acquire(ino)?;
        let r = match state.lock.write() {
            Ok(mut inner) => super::files::truncate(&self.keys.content, &mut inner, &file, size),
            Err(_) => Err(Errno::EIO),
        };
        drop(state);
        self.state_release(ino);
        r
    }

    pub(super) fn readlink_of(&self, ino: u64) -> Res<Vec<u8>> {
        let (dir, entry) = self.parent_and_entry(ino)?;
        let t = backing::readlink_in(dir.as_fd(), &entry)?;
        self.decrypt_target(&t)
    }

    /// Creates an entry `name` in `parent` with `make`, handling long names, ownership and the
    /// exact mode; returns its attributes and whatever `make` returned.
    fn create_entry<T>(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        own: bool,
        make: impl FnOnce(BorrowedFd<'_>, &OsStr) -> Res<T>,
    ) -> Res<(FileAttr, T)> {
        self.check_child(req, Access::Create, parent, name)?;
        let dir = self.open_dir_of(parent)?;
        let stored = self.stored(parent, dir.as_fd(), name)?;
        let entry = OsString::from(stored.entry());
        if let StoredName::Long { hashed, full } = &stored {
            backing::write_long_name(dir.as_fd(), OsStr::new(hashed), full)?;
        }
        let made = match make(dir.as_fd(), &entry) {
            Ok(t) => t,
            Err(e) => {
                if let StoredName::Long { hashed, .. } = &stored {
                    backing::delete_long_name(dir.as_fd(), OsStr::new(hashed));
                }
                return Err(e);
            }
        };
        if own && self.preserve_owner && (req.uid() != 0 || req.gid() != 0) {
            // A set-group-ID directory gives new entries its group; otherwise the caller's.
            let parent_st = rfs::fstat(&dir).map_err(errno)?;
            let gid = if parent_st.st_mode & 0o2000 != 0 {
                None
            } else {
                Some(rfs::Gid::from_raw(req.gid()))
            };
            rfs::chownat(
                dir.as_fd(),
                &entry,
                Some(rfs::Uid::from_raw(req.uid())),
                gid,
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno)?;
        }
        let st = backing::stat_in(dir.as_fd(), &entry)?;
        let attr = self.attr_of(&st, dir.as_fd(), &entry)?;
        self.nodes.remember(
            attr.ino.0,
            attr.kind,
            Alias {
                parent,
                entry,
                name: name.to_owned(),
            },
        )?;
        Ok((attr, made))
    }

    /// The process umask removed bits the caller asked for: put them back.
    fn fix_mode(&self, dir: BorrowedFd<'_>, entry: &OsStr, mode: u32) -> Res<()> {
        if mode & self.umask != 0 {
            backing::chmod_in(dir, entry, mode)?;
        }
        Ok(())
    }

    pub(super) fn create_child(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Res<(FileAttr, u64)> {
        let perm = mode & 0o7777;
        let (attr, fd) = self.create_entry(req, parent, name, true, |dir, entry| {
            let fd = backing::open_in(
                dir,
                entry,
                super::backing_flags(flags) | OFlags::CREATE | OFlags::EXCL,
                Mode::from_raw_mode(perm),
            )?;
            if perm & self.umask != 0 {
                rfs::fchmod(&fd, Mode::from_raw_mode(perm)).map_err(errno)?;
            }
            Ok(fd)
        })?;
        let fh = self.register_file(attr.ino.0, fd)?;
        Ok((attr, fh))
    }

    pub(super) fn mknod_child(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> Res<FileAttr> {
        let kind = rfs::FileType::from_raw_mode(mode);
        let perm = mode & 0o7777;
        let (attr, ()) = self.create_entry(req, parent, name, true, |dir, entry| {
            if kind == rfs::FileType::RegularFile {
                let fd = backing::open_in(
                    dir,
                    entry,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                    Mode::from_raw_mode(perm),
                )?;
                drop(fd);
            } else {
                rfs::mknodat(dir, entry, kind, Mode::from_raw_mode(perm), u64::from(rdev))
                    .map_err(errno)?;
            }
            self.fix_mode(dir, entry, perm)
        })?;
        Ok(attr)
    }

    pub(super) fn mkdir_child(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Res<FileAttr> {
        let perm = mode & 0o7777;
        let (attr, iv) = self.create_entry(req, parent, name, true, |dir, entry| {
            // Owner rwx while the IV is written (not needed as root, harmless otherwise).
            rfs::mkdirat(dir, entry, Mode::from_raw_mode(perm | 0o700)).map_err(errno)?;
            let made = backing::open_dir(dir, Path::new(entry))
                .and_then(|child| backing::write_dir_iv(child.as_fd()));
            match made {
                Ok(iv) => {
                    if perm | 0o700 != perm || perm & self.umask != 0 {
                        backing::chmod_in(dir, entry, perm)?;
                    }
                    Ok(iv)
                }
                Err(e) => {
                    let _ = rfs::unlinkat(dir, entry, AtFlags::REMOVEDIR);
                    Err(e)
                }
            }
        })?;
        self.nodes.set_dir_iv(attr.ino.0, iv);
        Ok(attr)
    }

    pub(super) fn symlink_child(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        target: &Path,
    ) -> Res<FileAttr> {
        let t = target.as_os_str().as_bytes();
        let stored_target = if t.is_empty() {
            String::new()
        } else {
            let sealed = self.keys.content.seal_value(t).map_err(|_| Errno::EIO)?;
            self.keys.names.b64_encode(&sealed)
        };
        let (attr, ()) = self.create_entry(req, parent, name, true, |dir, entry| {
            rfs::symlinkat(stored_target.as_str(), dir, entry).map_err(errno)
        })?;
        Ok(attr)
    }

    pub(super) fn link_child(
        &self,
        req: &Request,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
    ) -> Res<FileAttr> {
        // A new name for a covered file would be a way around the rules: the caller must be
        // allowed the file where it is, as well as the new name.
        self.check_ino(req, Access::Read, ino)?;
        let (src_dir, src_entry) = self.parent_and_entry(ino)?;
        let (attr, ()) = self.create_entry(req, newparent, newname, false, |dir, entry| {
            rfs::linkat(src_dir.as_fd(), &src_entry, dir, entry, AtFlags::empty()).map_err(errno)
        })?;
        Ok(attr)
    }

    pub(super) fn unlink_child(&self, req: &Request, parent: u64, name: &OsStr) -> Res<()> {
        self.check_child(req, Access::Remove, parent, name)?;
        let dir = self.open_dir_of(parent)?;
        let stored = self.stored(parent, dir.as_fd(), name)?;
        rfs::unlinkat(&dir, stored.entry(), AtFlags::empty()).map_err(errno)?;
        if let StoredName::Long { hashed, .. } = &stored {
            backing::delete_long_name(dir.as_fd(), OsStr::new(hashed));
        }
        self.nodes.unlinked(parent, name);
        Ok(())
    }

    /// Removes the (empty) directory `entry` of `dir`: its IV file is first moved aside into
    /// `dir`, so the backing rmdir sees an empty directory, and moved back if that fails.
    fn remove_dir_entry(&self, dir: BorrowedFd<'_>, entry: &OsStr) -> Res<()> {
        let child = backing::open_dir(dir, Path::new(entry))?;
        let names = backing::list_dir(child.as_fd())?;
        if names.is_empty() {
            return rfs::unlinkat(dir, entry, AtFlags::REMOVEDIR).map_err(errno);
        }
        if names.len() > 1 || names[0].0.as_bytes() != DIRIV_NAME.as_bytes() {
            return Err(Errno::ENOTEMPTY);
        }
        let mut r = [0u8; 8];
        crate::format::random(&mut r).map_err(|_| Errno::EIO)?;
        let tmp = format!("{DIRIV_NAME}.rmdir.{}", u64::from_le_bytes(r));
        rfs::renameat(&child, DIRIV_NAME, dir, tmp.as_str()).map_err(errno)?;
        if let Err(e) = rfs::unlinkat(dir, entry, AtFlags::REMOVEDIR) {
            if let Err(back) = rfs::renameat(dir, tmp.as_str(), &child, DIRIV_NAME) {
                tracing::warn!(error = %back, "cannot put a directory IV back after a failed rmdir");
            }
            return Err(errno(e));
        }
        if let Err(e) = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty()) {
            tracing::warn!(error = %e, "cannot remove a set-aside directory IV");
        }
        Ok(())
    }

    pub(super) fn rmdir_child(&self, req: &Request, parent: u64, name: &OsStr) -> Res<()> {
        self.check_child(req, Access::Remove, parent, name)?;
        let dir = self.open_dir_of(parent)?;
        let stored = self.stored(parent, dir.as_fd(), name)?;
        let st = backing::stat_in(dir.as_fd(), OsStr::new(stored.entry()))?;
        if backing::file_type(st.st_mode) != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        self.remove_dir_entry(dir.as_fd(), OsStr::new(stored.entry()))?;
        if let StoredName::Long { hashed, .. } = &stored {
            backing::delete_long_name(dir.as_fd(), OsStr::new(hashed));
        }
        self.nodes.unlinked(parent, name);
        Ok(())
    }

    pub(super) fn rename_child(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: fuser::RenameFlags,
    ) -> Res<()> {
        self.check_child(req, Access::Remove, parent, name)?;
        self.check_child(req, Access::Create, newparent, newname)?;
        let rflags = RRenameFlags::from_bits_retain(flags.bits());
        let d1 = self.open_dir_of(parent)?;
        let s1 = self.stored(parent, d1.as_fd(), name)?;
        let d2 = self.open_dir_of(newparent)?;
        let s2 = self.stored(newparent, d2.as_fd(), newname)?;
        let mut name_file_existed = false;
        if let StoredName::Long { hashed, full } = &s2 {
            match backing::write_long_name(d2.as_fd(), OsStr::new(hashed), full) {
                Ok(()) => {}
                Err(e) if e == Errno::EEXIST => name_file_existed = true,
                Err(e) => return Err(e),
            }
        }
        let do_rename = || rfs::renameat_with(&d1, s1.entry(), &d2, s2.entry(), rflags);
        let mut r = do_rename();
        if let Err(e) = r
            && !rflags.contains(RRenameFlags::NOREPLACE)
            && (e == rustix::io::Errno::NOTEMPTY || e == rustix::io::Errno::EXIST)
        {
            // The target directory holds only its IV: remove it the gocryptfs way and retry.
            if self
                .remove_dir_entry(d2.as_fd(), OsStr::new(s2.entry()))
                .is_ok()
            {
                r = do_rename();
            }
        }
        if let Err(e) = r {
            if let StoredName::Long { hashed, .. } = &s2
                && !name_file_existed
            {
                backing::delete_long_name(d2.as_fd(), OsStr::new(hashed));
            }
            return Err(errno(e));
        }
        let a1 = Alias {
            parent,
            entry: OsString::from(s1.entry()),
            name: name.to_owned(),
        };
        let a2 = Alias {
            parent: newparent,
            entry: OsString::from(s2.entry()),
            name: newname.to_owned(),
        };
        if rflags.contains(RRenameFlags::EXCHANGE) {
            self.nodes.exchanged(a1, a2);
            return Ok(());
        }
        let same = parent == newparent && s1.entry() == s2.entry();
        if let StoredName::Long { hashed, .. } = &s1
            && !same
        {
            backing::delete_long_name(d1.as_fd(), OsStr::new(hashed));
        }
        self.nodes.renamed((parent, name), a2);
        Ok(())
    }

    /// The clear listing of directory `ino`: ".", "..", then every entry whose name decrypts
    /// (one that does not is logged and left out, as gocryptfs does).
    pub(super) fn list(&self, ino: u64) -> Res<Vec<DirEntryOut>> {
        if self.nodes.kind(ino)? != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let dir = self.open_dir_of(ino)?;
        let iv = self.dir_iv_of(ino, dir.as_fd())?;
        let parent = if ino == ROOT {
            ROOT
        } else {
            self.nodes.entry(ino).map(|a| a.parent).unwrap_or(ROOT)
        };
        let mut out = vec![
            DirEntryOut {
                ino,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntryOut {
                ino: parent,
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        let dev = rfs::fstat(&dir).map_err(errno)?.st_dev;
        for (stored, d_ino, d_type) in backing::list_dir_typed(dir.as_fd())? {
            let full = match names::stored_kind(stored.as_bytes()) {
                StoredKind::Internal | StoredKind::LongName => continue,
                StoredKind::LongContent => match backing::read_long_name(dir.as_fd(), &stored) {
                    Ok(f) => f,
                    Err(_) => {
                        tracing::warn!("a long name without its .name file is left out");
                        continue;
                    }
                },
                StoredKind::Regular => stored.as_bytes().to_vec(),
            };
            let name = match self.keys.names.decrypt(&full, &iv) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "an entry whose name does not decrypt is left out");
                    continue;
                }
            };
            let kind = match d_type {
                Some(k) => k,
                None => backing::stat_in(dir.as_fd(), &stored)
                    .map(|st| backing::file_type(st.st_mode))
                    .unwrap_or(FileType::RegularFile),
            };
            out.push(DirEntryOut {
                ino: self.inos.map(dev, d_ino),
                kind,
                name: OsStr::from_bytes(&name).to_owned(),
            });
        }
        Ok(out)
    }

    pub(super) fn fsync_dir(&self, ino: u64) -> Res<()> {
        let dir = self.open_dir_of(ino)?;
        let fd = rfs::openat(
            &dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        rfs::fsync(&fd).map_err(errno)
    }
}
