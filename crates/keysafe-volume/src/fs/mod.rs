//! The FUSE file system that serves a ciphertext directory in the clear: every name is
//! encrypted and decrypted on the way through, every file block sealed and opened, exactly in
//! gocryptfs's format (`crate::format`), so the stock `gocryptfs` can mount the same directory.
//! Built on `fuser` with several session threads (`Filesystem` methods take `&self`); shared
//! state sits behind locks: the inode table, the open handles, and one lock per open file.
//!
//! Mount options: `default_permissions` (the kernel checks mode bits against the caller, which
//! is what a file system mounted by root for other users needs), `allow_other` when mounted by
//! root (services running as other users use the volume), `nosuid` and `nodev`. When running as
//! root, new files are given to the calling user and group, as gocryptfs does.

mod backing;
mod entries;
mod files;
pub mod gate;
mod nodes;
mod xattr;

pub use gate::{Access, AccessGate, OpenGate};

use crate::format::VolumeKeys;
use backing::{errno, io_errno};
use files::FileState;
use fuser::{
    AccessFlags, BsdFileFlags, Config, Errno, FileHandle, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};
use nodes::{InoMap, Nodes};
use rustix::fs::{Mode, OFlags};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub(crate) type Res<T> = Result<T, Errno>;

/// How long the kernel may cache names and attributes (go-fuse's default, as gocryptfs).
const TTL: Duration = Duration::from_secs(1);
/// The largest write the kernel sends in one request.
const MAX_WRITE: u32 = 1 << 20;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Shown as the source in /proc/mounts (`keysafe:NAME`).
    pub fs_name: String,
    /// Let users other than the mounting one use the mount (needs root, or `user_allow_other`).
    pub allow_other: bool,
    /// FUSE session threads.
    pub threads: usize,
    pub read_only: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        Self {
            fs_name: "keysafe".into(),
            allow_other: root,
            threads: 4,
            read_only: false,
        }
    }
}

struct OpenFile {
    file: File,
    ino: u64,
    state: Arc<FileState>,
}

struct DirEntryOut {
    ino: u64,
    kind: fuser::FileType,
    name: std::ffi::OsString,
}

enum Handle {
    File(Arc<OpenFile>),
    Dir(Arc<Vec<DirEntryOut>>),
}

/// The file system of one mounted volume.
pub struct VolumeFs {
    root: OwnedFd,
    keys: VolumeKeys,
    nodes: Nodes,
    inos: InoMap,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Per-inode content locks, with the number of handles using each.
    states: Mutex<HashMap<u64, (Arc<FileState>, usize)>>,
    gate: Arc<dyn AccessGate>,
    /// Running as root: give new files to the caller.
    preserve_owner: bool,
    /// This process's umask, to restore the exact mode a caller asked for.
    umask: u32,
}

impl std::fmt::Debug for VolumeFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeFs").finish_non_exhaustive()
    }
}

fn current_umask() -> u32 {
    let old = rustix::process::umask(Mode::from_raw_mode(0o022));
    rustix::process::umask(old);
    old.bits()
}

impl VolumeFs {
    /// The file system over `cipherdir`, whose configuration gave `keys`.
    pub fn new(
        cipherdir: &Path,
        keys: VolumeKeys,
        gate: Arc<dyn AccessGate>,
    ) -> std::io::Result<Self> {
        let root = rustix::fs::open(
            cipherdir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&root)?;
        let iv = backing::read_dir_iv(root.as_fd()).map_err(|_| {
            std::io::Error::other(format!(
                "{} has no readable gocryptfs.diriv",
                cipherdir.display()
            ))
        })?;
        Ok(Self {
            inos: InoMap::new(st.st_dev, st.st_ino),
            nodes: Nodes::new(iv),
            root,
            keys,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            states: Mutex::new(HashMap::new()),
            gate,
            preserve_owner: rustix::process::geteuid().is_root(),
            umask: current_umask(),
        })
    }

    fn new_handle(&self, h: Handle) -> Res<u64> {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().map_err(|_| Errno::EIO)?.insert(fh, h);
        Ok(fh)
    }

    fn file_handle(&self, fh: FileHandle) -> Res<Arc<OpenFile>> {
        match self.handles.lock().map_err(|_| Errno::EIO)?.get(&fh.0) {
            Some(Handle::File(f)) => Ok(f.clone()),
            Some(Handle::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::EBADF),
        }
    }

    /// An open handle of `ino`, for a file whose last name is gone (unlinked while open).
    fn open_file_of(&self, ino: u64) -> Option<Arc<OpenFile>> {
        let handles = self.handles.lock().ok()?;
        handles.values().find_map(|h| match h {
            Handle::File(f) if f.ino == ino => Some(f.clone()),
            _ => None,
        })
    }

    fn state_acquire(&self, ino: u64) -> Res<Arc<FileState>> {
        let mut states = self.states.lock().map_err(|_| Errno::EIO)?;
        let e = states
            .entry(ino)
            .or_insert_with(|| (Arc::new(FileState::default()), 0));
        e.1 += 1;
        Ok(e.0.clone())
    }

    fn state_release(&self, ino: u64) {
        if let Ok(mut states) = self.states.lock()
            && let Some(e) = states.get_mut(&ino)
        {
            e.1 = e.1.saturating_sub(1);
            if e.1 == 0 {
                states.remove(&ino);
            }
        }
    }

    /// Asks the gate about `path` (computed only when some rule guards a path).
    fn check(&self, req: &Request, access: Access, path: impl FnOnce() -> Res<PathBuf>) -> Res<()> {
        if !self.gate.guards() {
            return Ok(());
        }
        let p = path()?;
        self.gate.check(req.pid(), access, &p)
    }

    fn check_ino(&self, req: &Request, access: Access, ino: u64) -> Res<()> {
        self.check(req, access, || self.nodes.plain_path(ino))
    }

    fn check_child(&self, req: &Request, access: Access, parent: u64, name: &OsStr) -> Res<()> {
        self.check(req, access, || {
            Ok(self.nodes.plain_path(parent)?.join(name))
        })
    }

    fn open(&self, req: &Request, ino: u64, flags: OpenFlags) -> Res<u64> {
        let access = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => Access::Read,
            _ => Access::Write,
        };
        self.check_ino(req, access, ino)?;
        let (dir, entry) = self.parent_and_entry(ino)?;
        let fd = backing::open_in(dir.as_fd(), &entry, backing_flags(flags.0), Mode::empty())?;
        self.register_file(ino, fd)
    }

    fn register_file(&self, ino: u64, fd: OwnedFd) -> Res<u64> {
        let state = self.state_acquire(ino)?;
        let file = Arc::new(OpenFile {
            file: File::from(fd),
            ino,
            state,
        });
        match self.new_handle(Handle::File(file)) {
            Ok(fh) => Ok(fh),
            Err(e) => {
                self.state_release(ino);
                Err(e)
            }
        }
    }

    fn read(&self, fh: FileHandle, off: u64, size: u32, reply: ReplyData) {
        let f = match self.file_handle(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let Ok(inner) = f.state.lock.read() else {
            return reply.error(Errno::EIO);
        };
        // The reply is sent from the thread-local buffer, without another copy.
        let mut reply = Some(reply);
        let r = files::read_with(
            &self.keys.content,
            &inner,
            &f.file,
            off,
            u64::from(size),
            |data| {
                if let Some(r) = reply.take() {
                    r.data(data);
                }
            },
        );
        if let (Err(e), Some(r)) = (r, reply.take()) {
            r.error(e);
        }
    }

    fn write(&self, fh: FileHandle, off: u64, data: &[u8]) -> Res<u32> {
        let f = self.file_handle(fh)?;
        let mut inner = f.state.lock.write().map_err(|_| Errno::EIO)?;
        files::write(&self.keys.content, &mut inner, &f.file, off, data)?;
        u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
    }

    fn release(&self, fh: FileHandle) {
        let h = self.handles.lock().ok().and_then(|mut m| m.remove(&fh.0));
        if let Some(Handle::File(f)) = h {
            self.state_release(f.ino);
        }
    }

    fn fsync(&self, fh: FileHandle, datasync: bool) -> Res<()> {
        let f = self.file_handle(fh)?;
        let r = if datasync {
            f.file.sync_data()
        } else {
            f.file.sync_all()
        };
        r.map_err(|e| io_errno(&e))
    }

    fn fallocate(&self, fh: FileHandle, off: u64, len: u64, mode: i32) -> Res<()> {
        const KEEP_SIZE: i32 = 1;
        if mode != 0 && mode != KEEP_SIZE {
            return Err(Errno::EOPNOTSUPP);
        }
        let f = self.file_handle(fh)?;
        let mut inner = f.state.lock.write().map_err(|_| Errno::EIO)?;
        files::allocate(
            &self.keys.content,
            &mut inner,
            &f.file,
            off,
            len,
            mode == KEEP_SIZE,
        )
    }

    fn statfs(&self) -> Res<rustix::fs::StatVfs> {
        rustix::fs::fstatvfs(&self.root).map_err(errno)
    }
}

/// The flags to open a backing file with: read-write for any write (every partial write reads
/// the old block), and never `O_APPEND` (offsets are ours to compute) or `O_DIRECT` (ciphertext
/// blocks are not aligned); creation flags are handled by the caller.
fn backing_flags(flags: i32) -> OFlags {
    let f = OFlags::from_bits_retain(flags as u32);
    let mut out = if f.contains(OFlags::WRONLY) || f.contains(OFlags::RDWR) {
        OFlags::RDWR
    } else {
        OFlags::RDONLY
    };
    out |= f & (OFlags::SYNC | OFlags::DSYNC | OFlags::NONBLOCK);
    out
}

/// Mounts `fs` at `mountpoint` and serves it on background threads until the returned session
/// is dropped (which unmounts) or the file system is unmounted from outside.
pub fn mount(
    fs: VolumeFs,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> std::io::Result<fuser::BackgroundSession> {
    session(fs, mountpoint, cfg)?.spawn()
}

/// Mounts and returns the session, for a caller that runs it in the foreground
/// (`Session::run` returns when the file system is unmounted).
pub fn session(
    fs: VolumeFs,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> std::io::Result<fuser::Session<VolumeFs>> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(cfg.fs_name.clone()),
        MountOption::Subtype("keysafe".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
        if cfg.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = cfg.threads > 1;
    fuser::Session::new(fs, mountpoint, &config)
}

fn reply_entry(reply: ReplyEntry, r: Res<fuser::FileAttr>) {
    match r {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Res<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_attr(reply: ReplyAttr, r: Res<fuser::FileAttr>) {
    match r {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(e) => reply.error(e),
    }
}

/// Answers an xattr request: the size when asked with size 0, else the bytes if they fit.
fn reply_xattr(reply: ReplyXattr, size: u32, r: Res<Vec<u8>>) {
    match r {
        Ok(v) if size == 0 => reply.size(u32::try_from(v.len()).unwrap_or(u32::MAX)),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for VolumeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(MAX_WRITE) {
            let _ = config.set_max_readahead(nearest);
        }
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.lookup_child(parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        reply_attr(reply, self.getattr_of(ino.0, fh));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.check_ino(req, Access::Write, ino.0).and_then(|()| {
            self.setattr_of(
                ino.0,
                entries::SetAttr {
                    mode,
                    uid,
                    gid,
                    size,
                    atime,
                    mtime,
                },
                fh,
            )
        });
        reply_attr(reply, r);
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .check_ino(req, Access::Read, ino.0)
            .and_then(|()| self.readlink_of(ino.0))
        {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.mknod_child(req, parent.0, name, mode, rdev));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.mkdir_child(req, parent.0, name, mode));
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.unlink_child(req, parent.0, name));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.rmdir_child(req, parent.0, name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.symlink_child(req, parent.0, link_name, target));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.rename_child(req, parent.0, name, newparent.0, newname, flags),
        );
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.link_child(req, ino.0, newparent.0, newname));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match VolumeFs::open(self, req, ino.0, flags) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        VolumeFs::read(self, fh, offset, size, reply);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match VolumeFs::write(self, fh, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes go straight to the backing file; nothing is buffered here.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        VolumeFs::release(self, fh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, VolumeFs::fsync(self, fh, datasync));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = self
            .check_ino(req, Access::List, ino.0)
            .and_then(|()| self.list(ino.0))
            .and_then(|entries| self.new_handle(Handle::Dir(Arc::new(entries))));
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.handles.lock().map(|m| match m.get(&fh.0) {
            Some(Handle::Dir(d)) => Some(d.clone()),
            _ => None,
        }) {
            Ok(Some(d)) => d,
            _ => return reply.error(Errno::EBADF),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, e) in entries.iter().enumerate().skip(start) {
            if reply.add(INodeNo(e.ino), (i + 1) as u64, e.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut m) = self.handles.lock() {
            m.remove(&fh.0);
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fsync_dir(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match VolumeFs::statfs(self) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                u32::try_from(s.f_bsize).unwrap_or(4096),
                255,
                u32::try_from(s.f_frsize).unwrap_or(4096),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self
            .check_ino(req, Access::Write, ino.0)
            .and_then(|()| self.set_xattr(ino.0, name, value, flags));
        reply_empty(reply, r);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self
            .check_ino(req, Access::Read, ino.0)
            .and_then(|()| self.get_xattr(ino.0, name));
        reply_xattr(reply, size, r);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self
            .check_ino(req, Access::Read, ino.0)
            .and_then(|()| self.list_xattr(ino.0));
        reply_xattr(reply, size, r);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .check_ino(req, Access::Write, ino.0)
            .and_then(|()| self.remove_xattr(ino.0, name));
        reply_empty(reply, r);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Only called without default_permissions (a mount for its owner alone): allow.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_child(req, parent.0, name, mode, flags) {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, VolumeFs::fallocate(self, fh, offset, length, mode));
    }
}
