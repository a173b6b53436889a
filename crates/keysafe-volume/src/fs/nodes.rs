//! The inode table: which FUSE inode is which ciphertext entry. An inode number is the backing
//! file's inode number when the backing file lives on the cipher directory's device (so `ls -i`
//! and `stat` agree and hard links share an inode), otherwise one allocated from the upper half
//! of the range. Each inode remembers the names it is known by (a hard-linked file has several):
//! the parent inode, the stored (encrypted) entry name and the plaintext name. A name is added on
//! lookup and creation, moved on rename and dropped on unlink; the kernel's lookup count decides
//! when an inode is forgotten.

use super::Res;
use crate::format::DirIv;
use fuser::{Errno, FileType};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

pub const ROOT: u64 = 1;
/// Inode numbers from here up are allocated, never backing inode numbers.
const ALLOCATED_BASE: u64 = 1 << 63;
/// Deeper than this is a loop in the table, not a directory tree.
const MAX_DEPTH: usize = 4096;

/// One name of an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub parent: u64,
    /// The entry in the parent's ciphertext directory (encrypted or hashed long name).
    pub entry: OsString,
    /// The plaintext name.
    pub name: OsString,
}

#[derive(Debug)]
pub struct Node {
    pub kind: FileType,
    pub aliases: Vec<Alias>,
    pub lookups: u64,
    /// A directory's IV, read once (it never changes).
    pub dir_iv: Option<DirIv>,
}

/// Maps backing (device, inode) pairs to FUSE inode numbers.
#[derive(Debug)]
pub struct InoMap {
    root_dev: u64,
    root_ino: u64,
    extra: Mutex<HashMap<(u64, u64), u64>>,
    next: AtomicU64,
}

impl InoMap {
    pub fn new(root_dev: u64, root_ino: u64) -> Self {
        Self {
            root_dev,
            root_ino,
            extra: Mutex::new(HashMap::new()),
            next: AtomicU64::new(ALLOCATED_BASE),
        }
    }

    pub fn map(&self, dev: u64, ino: u64) -> u64 {
        if dev == self.root_dev && ino == self.root_ino {
            return ROOT;
        }
        if dev == self.root_dev && ino != ROOT && ino < ALLOCATED_BASE {
            return ino;
        }
        let Ok(mut extra) = self.extra.lock() else {
            return ALLOCATED_BASE - 1;
        };
        *extra
            .entry((dev, ino))
            .or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// The table itself: inodes, and an index from (parent, plaintext name) to inode.
#[derive(Debug, Default)]
struct Table {
    nodes: HashMap<u64, Node>,
    names: HashMap<(u64, OsString), u64>,
}

impl Table {
    fn drop_name(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        let ino = self.names.remove(&(parent, name.to_owned()))?;
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.aliases
                .retain(|a| !(a.parent == parent && a.name.as_bytes() == name.as_bytes()));
        }
        Some(ino)
    }

    fn add_name(&mut self, ino: u64, alias: Alias) {
        let key = (alias.parent, alias.name.clone());
        if let Some(old) = self.names.get(&key).copied()
            && old != ino
            && let Some(node) = self.nodes.get_mut(&old)
        {
            node.aliases
                .retain(|a| a.parent != key.0 || a.name != key.1);
        }
        self.names.insert(key, ino);
        if let Some(node) = self.nodes.get_mut(&ino) {
            if let Some(pos) = node.aliases.iter().position(|a| *a == alias) {
                // Most recently used name first: it is the one most likely to still exist.
                let a = node.aliases.remove(pos);
                node.aliases.insert(0, a);
            } else {
                node.aliases
                    .retain(|a| a.parent != alias.parent || a.name != alias.name);
                node.aliases.insert(0, alias);
            }
        }
    }
}

#[derive(Debug)]
pub struct Nodes {
    table: RwLock<Table>,
}

fn poisoned<T>(_: T) -> Errno {
    Errno::EIO
}

impl Nodes {
    pub fn new(root_iv: DirIv) -> Self {
        let mut table = Table::default();
        table.nodes.insert(
            ROOT,
            Node {
                kind: FileType::Directory,
                aliases: Vec::new(),
                lookups: 1,
                dir_iv: Some(root_iv),
            },
        );
        Self {
            table: RwLock::new(table),
        }
    }

    /// Records a lookup (or creation) of `ino` under `alias`.
    pub fn remember(&self, ino: u64, kind: FileType, alias: Alias) -> Res<()> {
        let mut t = self.table.write().map_err(poisoned)?;
        let node = t.nodes.entry(ino).or_insert_with(|| Node {
            kind,
            aliases: Vec::new(),
            lookups: 0,
            dir_iv: None,
        });
        if ino != ROOT {
            node.lookups += 1;
        }
        if node.kind != kind {
            // The backing inode was reused for another kind of file: start afresh.
            node.kind = kind;
            node.dir_iv = None;
            let old: Vec<Alias> = std::mem::take(&mut node.aliases);
            for a in old {
                t.names.remove(&(a.parent, a.name));
            }
        }
        t.add_name(ino, alias);
        Ok(())
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        if let Ok(mut t) = self.table.write()
            && let Some(node) = t.nodes.get_mut(&ino)
        {
            node.lookups = node.lookups.saturating_sub(n);
            if node.lookups == 0
                && let Some(node) = t.nodes.remove(&ino)
            {
                for a in node.aliases {
                    let key = (a.parent, a.name);
                    if t.names.get(&key) == Some(&ino) {
                        t.names.remove(&key);
                    }
                }
            }
        }
    }

    pub fn kind(&self, ino: u64) -> Res<FileType> {
        let t = self.table.read().map_err(poisoned)?;
        t.nodes.get(&ino).map(|n| n.kind).ok_or(Errno::ENOENT)
    }

    pub fn dir_iv(&self, ino: u64) -> Res<Option<DirIv>> {
        let t = self.table.read().map_err(poisoned)?;
        let node = t.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        if node.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok(node.dir_iv)
    }

    pub fn set_dir_iv(&self, ino: u64, iv: DirIv) {
        if let Ok(mut t) = self.table.write()
            && let Some(node) = t.nodes.get_mut(&ino)
        {
            node.dir_iv = Some(iv);
        }
    }

    /// The first (most recent) name of `ino`: its parent and its stored entry name.
    pub fn entry(&self, ino: u64) -> Res<Alias> {
        let t = self.table.read().map_err(poisoned)?;
        let node = t.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        node.aliases.first().cloned().ok_or(Errno::ENOENT)
    }

    /// The stored names from the root down to `ino` (empty for the root).
    pub fn stored_components(&self, ino: u64) -> Res<Vec<OsString>> {
        let t = self.table.read().map_err(poisoned)?;
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let node = t.nodes.get(&cur).ok_or(Errno::ENOENT)?;
            let alias = node.aliases.first().ok_or(Errno::ENOENT)?;
            parts.push(alias.entry.clone());
            cur = alias.parent;
            if parts.len() > MAX_DEPTH {
                return Err(Errno::ELOOP);
            }
        }
        parts.reverse();
        Ok(parts)
    }

    /// The plaintext path of `ino` inside the volume, starting with '/'.
    pub fn plain_path(&self, ino: u64) -> Res<PathBuf> {
        let rel = self.path_of(ino, |a| &a.name)?;
        let mut p = PathBuf::from("/");
        if rel.as_os_str() != "." {
            p.push(rel);
        }
        Ok(p)
    }

    fn path_of(&self, ino: u64, part: impl Fn(&Alias) -> &OsString) -> Res<PathBuf> {
        let t = self.table.read().map_err(poisoned)?;
        let mut parts: Vec<&OsStr> = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let node = t.nodes.get(&cur).ok_or(Errno::ENOENT)?;
            let alias = node.aliases.first().ok_or(Errno::ENOENT)?;
            parts.push(part(alias));
            cur = alias.parent;
            if parts.len() > MAX_DEPTH {
                return Err(Errno::ELOOP);
            }
        }
        if parts.is_empty() {
            return Ok(PathBuf::from("."));
        }
        let mut out = PathBuf::new();
        for p in parts.iter().rev() {
            out.push(p);
        }
        Ok(out)
    }

    /// Drops the name (parent, plaintext name) from whichever inode had it.
    pub fn unlinked(&self, parent: u64, name: &OsStr) {
        if let Ok(mut t) = self.table.write() {
            t.drop_name(parent, name);
        }
    }

    /// Moves the name (parent, name) to `to`; a name at the destination is dropped (replaced).
    pub fn renamed(&self, from: (u64, &OsStr), to: Alias) {
        if let Ok(mut t) = self.table.write() {
            t.drop_name(to.parent, &to.name);
            if let Some(ino) = t.drop_name(from.0, from.1) {
                t.add_name(ino, to);
            }
        }
    }

    /// Swaps two names (`RENAME_EXCHANGE`).
    pub fn exchanged(&self, a: Alias, b: Alias) {
        if let Ok(mut t) = self.table.write() {
            let ia = t.drop_name(a.parent, &a.name);
            let ib = t.drop_name(b.parent, &b.name);
            if let Some(ia) = ia {
                t.add_name(ia, b.clone());
            }
            if let Some(ib) = ib {
                t.add_name(ib, a);
            }
        }
    }
}
