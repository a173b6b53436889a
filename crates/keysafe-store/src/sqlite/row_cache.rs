//! A bounded in-memory cache of deposits' current versions as stored: the header row, the
//! sealed payload, the wrapped data key and the row's MAC, and what reads derived from the row
//! (its content tag and, outside the seal's per-deposit mode, its unwrapped data key: see
//! `ReadMemo`; [`RowCache::forget`] drops them all when the service seals). The service still
//! verifies the MAC, checks access and opens the payload on every read. It spares
//! the SQLite point read, which costs far more than its B-tree descents suggest: every read is
//! audited, so the writer commits continually, and each commit empties every read connection's
//! page cache (SQLite's WAL mode cannot tell which pages changed).
//!
//! ## Coherence across processes
//!
//! Several processes may write the same file (several `keysafe serve` on one data directory,
//! administration commands), so a write this process never saw must still reach its cache.
//! The change epoch is a 64-bit counter at the start of `<database>-epoch`, which every
//! process maps into its memory shared (as SQLite maps its `-shm`), so reading it is a load,
//! not a system call. Whoever commits a change to deposit rows increments it after the commit
//! and before answering the writer ([`RowCache::committed`]); the increment is atomic, so
//! concurrent ones from several processes each count.
//!
//! Each process's cache records the epoch its entries are valid at (`valid`), and serves
//! nothing while the counter differs: an increment it did not make itself (another process
//! committed, or opened the file) empties the cache at the next read and moves `valid` to
//! the counter. Its own writer, holding the cache's lock, increments the counter after each
//! commit that changed deposit rows, and if the counter was still `valid` (nobody else
//! changed anything since) it drops only the entries of the deposits the commit changed (a
//! put's new version it keeps, as the writer read it inside the committed transaction), and
//! moves `valid` past its increment; otherwise it empties the cache. So a write to one deposit
//! leaves every other cached deposit served, and the next write to the same deposit finds its
//! header without reading the file. A read fills the cache, under the same lock, only when the
//! counter is still the value it had before the read (it only grows, so nothing was committed
//! and announced in between) and is `valid`:
//!
//! - a read that began after a commit sees the new row;
//! - a read that began before it may see the old row; if it fills after the increment, the
//!   epoch moved and nothing is stored; if before, the writer's update, made under the lock
//!   after the increment and before the write is acknowledged, drops or replaces it.
//!
//! So once a write is acknowledged, no process serves the row it replaced. A process that dies
//! between its commit and its increment never acknowledged its write; the rows it changed may
//! then be served from other processes' caches until the next change by anyone or for at most
//! [`MAX_AGE`], and every store increments once when it opens, so a restarted server clears
//! them. Like SQLite's `-shm`, the file must not be truncated under running processes (a
//! process touching a mapping past the end of its file is killed by `SIGBUS`); keysafe only
//! ever grows it, to the counter's eight bytes. A store that cannot open the epoch does not
//! open at all: it could neither cache coherently nor announce its own writes to the others.
//! The file is not `<database>-changes`, where older builds kept an epoch of another format
//! (the file's length), so that processes of the two never write each other's file.

use keysafe_core::store::{DepositKey, Mutation, ReadMemo, VersionRow, WrappedId};
use keysafe_proto::Principal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long an entry may be served at most, whatever the epoch says: the bound on how long a
/// change committed by a process that died before its increment, or written to the file by
/// something other than keysafe, stays unseen. Each entry read once per bound costs a point
/// read of the file, so a shorter bound makes rarely read deposits miss more often.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(5);

/// The weight the cache holds at most: about 16 MiB of records (each weighs its heap-allocated
/// fields plus [`ENTRY_OVERHEAD`]); a 32-byte deposit of a client weighs about 1,000, so
/// about 16,600 of them.
pub(crate) const CAPACITY_BYTES: u64 = 16 << 20;

/// The length of the change epoch's file that the counter needs.
const EPOCH_BYTES: u64 = 8;

/// What an entry costs beyond its heap-allocated fields: the two records, the memo, the key, the
/// entry and the `Arc`'s counts (464 bytes on x86-64, checked by a test), plus the cache's own
/// slot and the allocator's rounding of the ten allocations (nine fields and the memo's tag).
const ENTRY_OVERHEAD: u64 = 576;

/// The change epoch shared by every process on one database file: a counter in a shared
/// mapping of the file's first eight bytes.
struct ChangeSignal {
    map: memmap2::MmapRaw,
}

impl ChangeSignal {
    /// Opens (or creates) the epoch of the database at `db`.
    fn open(db: &Path) -> std::io::Result<Self> {
        let path = signal_path(db);
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path)?;
        let mine = file.metadata()?;
        // Owned as the database is, as SQLite does for its `-wal` and `-shm`: an administration
        // command run as root that creates the file must not leave it unopenable to the server's
        // own user. Only a privileged process can change the owner; for any other the owner is
        // already its own, as the database's must be for it to write there.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let Ok(owner) = std::fs::metadata(db)
                && (owner.uid(), owner.gid()) != (mine.uid(), mine.gid())
            {
                let _ = std::os::unix::fs::fchown(&file, Some(owner.uid()), Some(owner.gid()));
            }
        }
        // Grown, never shrunk: another process may have mapped it already, and two processes
        // growing it at the same moment both set the same length, which changes nothing.
        if mine.len() < EPOCH_BYTES {
            file.set_len(EPOCH_BYTES)?;
        }
        let map = memmap2::MmapOptions::new()
            .len(usize::try_from(EPOCH_BYTES).unwrap_or(8))
            .map_raw(&file)?;
        Ok(Self { map })
    }

    fn counter(&self) -> &AtomicU64 {
        let ptr = self.map.as_mut_ptr().cast::<u64>();
        debug_assert!(ptr.is_aligned());
        // SAFETY (`AtomicU64::from_ptr`'s contract): the pointer is valid for reads and writes
        // of eight bytes for as long as the returned reference, which borrows `self`, the
        // owner of the mapping (shared, readable and writable, at least eight bytes long over
        // a file at least that long); it is aligned, since a mapping starts on a page; and
        // every access to these bytes by keysafe, in this process or another, is an atomic
        // operation through this function. Anything else writing the file's first bytes (a
        // person, a tool) changes an epoch, which only makes entries stale; shrinking the file
        // would make the kernel kill the process with SIGBUS, not read freed memory.
        #[allow(unsafe_code)]
        unsafe {
            AtomicU64::from_ptr(ptr)
        }
    }

    fn epoch(&self) -> u64 {
        self.counter().load(Ordering::SeqCst)
    }

    /// Increments the counter; answers the value before.
    fn bump(&self) -> u64 {
        self.counter().fetch_add(1, Ordering::SeqCst)
    }
}

/// Where the change epoch of the database at `db` lives: beside it, as `-wal` and `-shm` are.
pub(crate) fn signal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-epoch");
    PathBuf::from(name)
}

/// Increments the change epoch of the database at `db`, for writers that bypass the store (the
/// test kit's raw SQL).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn announce_change(db: &Path) -> std::io::Result<()> {
    ChangeSignal::open(db)?.bump();
    Ok(())
}

#[derive(Clone)]
struct Entry {
    read_at: Instant,
    row: VersionRow,
}

/// What a commit of this process's writer did to deposit rows a cached read returns, in the
/// order of the batch's mutations.
pub(crate) enum Update {
    /// This deposit's rows changed; its entry goes.
    Drop(DepositKey),
    /// This deposit's rows changed, and this is its current version as read inside the
    /// committed transaction.
    Keep(DepositKey, VersionRow),
    /// Rows of deposits the mutation does not name changed.
    All,
}

#[derive(Clone)]
struct Weight;

fn principal_bytes(p: &Principal) -> usize {
    match p {
        Principal::Client(fp) => fp.as_str().len(),
        Principal::Group { org, name } => org.as_str().len() + name.as_str().len(),
    }
}

impl quick_cache::Weighter<DepositKey, Entry> for Weight {
    fn weight(&self, key: &DepositKey, e: &Entry) -> u64 {
        let (d, v, _) = &*e.row;
        // Every heap allocation an entry holds: the key's and the header's copies of the owner
        // and name, the organisation, the MAC, the version's creator, data key and payload, and
        // what reads may derive from them (counted from the start: they come after the insert).
        let bytes = 2 * (principal_bytes(&key.owner) + key.name.as_str().len())
            + ReadMemo::HEAP_BYTES
            + d.org.as_str().len()
            + d.mac.as_ref().map_or(0, Vec::len)
            + v.meta.creator.as_str().len()
            + v.wrapped_dek.len()
            + v.ciphertext.len();
        ENTRY_OVERHEAD.saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX))
    }
}

pub(crate) struct RowCache {
    signal: ChangeSignal,
    rows: quick_cache::sync::Cache<DepositKey, Entry, Weight>,
    /// The epoch the entries are valid at. Written only under `lock`, after the entries were
    /// made valid at it, so a read that sees it equal to the counter takes a valid entry.
    valid: AtomicU64,
    /// Orders fills, this process's updates and the emptying after another process's change:
    /// every insert, removal and clear happens under it.
    lock: Mutex<()>,
}

impl RowCache {
    /// Opens the change epoch beside the database at `db` (creating it, private to the owner)
    /// and counts one change: whatever a process that died mid-write left unannounced.
    pub(crate) fn open(db: &Path, capacity_bytes: u64) -> std::io::Result<Self> {
        let signal = ChangeSignal::open(db)?;
        let valid = signal.bump().wrapping_add(1);
        let items =
            usize::try_from(capacity_bytes / (ENTRY_OVERHEAD + ReadMemo::HEAP_BYTES as u64))
                .unwrap_or(usize::MAX)
                .max(16);
        Ok(Self {
            signal,
            rows: quick_cache::sync::Cache::with_weighter(items, capacity_bytes, Weight),
            valid: AtomicU64::new(valid),
            lock: Mutex::new(()),
        })
    }

    fn locked(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data of its own: a holder that panicked left nothing half-done.
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current epoch, to pass to [`RowCache::fill`] after the read.
    pub(crate) fn epoch(&self) -> u64 {
        self.signal.epoch()
    }

    /// The deposit's current version as last read or written here, if no process changed it
    /// since and the entry is younger than [`MAX_AGE`].
    pub(crate) fn get(&self, key: &DepositKey) -> Option<VersionRow> {
        let seen = self.signal.epoch();
        if self.valid.load(Ordering::SeqCst) != seen {
            self.catch_up();
            return None;
        }
        let e = self.rows.get(key)?;
        if e.read_at.elapsed() >= MAX_AGE {
            // Not kept either: what reads derived from it (a data key) goes with it.
            let _held = self.locked();
            if self
                .rows
                .get(key)
                .is_some_and(|e| e.read_at.elapsed() >= MAX_AGE)
            {
                self.rows.remove(key);
            }
            return None;
        }
        Some(e.row)
    }

    /// Empties the cache if a change this process did not make moved the epoch.
    fn catch_up(&self) {
        let _held = self.locked();
        let now = self.signal.epoch();
        if self.valid.load(Ordering::SeqCst) != now {
            self.rows.clear();
            self.valid.store(now, Ordering::SeqCst);
        }
    }

    /// Keeps a row read while the epoch was `before`, unless a change was committed since.
    pub(crate) fn fill(&self, key: &DepositKey, before: u64, row: VersionRow) {
        let _held = self.locked();
        if self.signal.epoch() != before || self.valid.load(Ordering::SeqCst) != before {
            return;
        }
        self.rows.insert(
            key.clone(),
            Entry {
                read_at: Instant::now(),
                row,
            },
        );
    }

    /// Announces a commit of this process's writer that changed deposit rows, before the
    /// writer answers: every other process's entries become stale, and here the deposits it
    /// changed are dropped or replaced (all of them when another change came first or
    /// `updates` has [`Update::All`]; a purged deposit's sealed rows do not linger here).
    pub(crate) fn committed(&self, updates: Vec<Update>) {
        let _held = self.locked();
        let before = self.signal.bump();
        let ours = before == self.valid.load(Ordering::SeqCst)
            && !updates.iter().any(|u| matches!(u, Update::All));
        if ours {
            for u in updates {
                match u {
                    Update::Drop(key) => {
                        self.rows.remove(&key);
                    }
                    Update::Keep(key, row) => self.rows.insert(
                        key,
                        Entry {
                            read_at: Instant::now(),
                            row,
                        },
                    ),
                    Update::All => {}
                }
            }
        } else {
            self.rows.clear();
        }
        self.valid.store(before.wrapping_add(1), Ordering::SeqCst);
    }

    /// Announces a change to deposit rows this process made around its writer (an import):
    /// every entry, here and in every other process, becomes stale.
    pub(crate) fn changed(&self) {
        self.committed(vec![Update::All]);
    }

    /// Drops every entry here, and with them what reads derived from the rows (once the reads
    /// holding them finish). The entries' epoch stays valid: an empty cache is valid at any.
    pub(crate) fn forget(&self) {
        let _held = self.locked();
        self.rows.clear();
    }

    /// How many rows are cached (for tests and diagnostics).
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }
}

/// The largest payload whose new version the writer reads back into the cache after a put.
/// Keys and secrets are far smaller; a larger payload's entry is dropped instead, since reading
/// it back holds the write lock longer and its entry would take much of the cache.
const KEEP_AT_MOST: usize = 64 * 1024;

/// Which cached deposits a mutation can change (a header row or any of its versions, as a
/// cached read would return them). Exhaustive, so a new mutation must be classified here.
pub(crate) enum Effect {
    None,
    /// A new current version of this deposit with a payload of at most [`KEEP_AT_MOST`], which
    /// the writer reads back and keeps (the next put to it reads the header it checks from
    /// here).
    Put(DepositKey),
    /// This deposit's rows only; its entry goes.
    One(DepositKey),
    /// Deposits it does not name.
    All,
}

pub(crate) fn effect(m: &Mutation) -> Effect {
    match m {
        Mutation::PutVersion { key, version, .. } if version.ciphertext.len() <= KEEP_AT_MOST => {
            Effect::Put(key.clone())
        }
        // Larger puts, soft deletes, purges, ACL changes and re-wraps (a key rotation re-wraps
        // every version, current or not): rarer than puts of keys, and followed by no read
        // that needs them.
        Mutation::PutVersion { key, .. }
        | Mutation::SetDeleted { key, .. }
        | Mutation::Purge { key }
        | Mutation::SetAcl { key, .. } => Effect::One(key.clone()),
        Mutation::Rewrap { id, .. } => match id {
            WrappedId::DepositVersion { key, .. } => Effect::One(key.clone()),
            WrappedId::AuditSigningKey { .. } | WrappedId::ClusterTlsKey { .. } => Effect::None,
        },
        // Grants to the client go, and each such deposit's ACL serial moves.
        Mutation::DeleteClient { .. }
        // Refused while the organisation or group owns deposits or is granted one; counted as
        // changes all the same, so that the rule lives in one place (`lifecycle`).
        | Mutation::DeleteOrg { .. }
        | Mutation::DeleteGroup { .. }
        // Gives header rows their MACs.
        | Mutation::BackfillRowMacs { .. } => Effect::All,
        Mutation::CreateOrg(_)
        | Mutation::SetOrgAuth { .. }
        | Mutation::InsertClient { .. }
        | Mutation::InsertRegistrationToken(_)
        | Mutation::RotateToken { .. }
        | Mutation::MarkSuspectedClone { .. }
        | Mutation::ResetToken { .. }
        | Mutation::SetClientState { .. }
        | Mutation::SetClientRole { .. }
        | Mutation::DisableUnactivated { .. }
        | Mutation::CreateGroup { .. }
        | Mutation::AddGroupMember { .. }
        | Mutation::AdmitGroupMember { .. }
        | Mutation::RemoveGroupMember { .. }
        | Mutation::InsertKek(_)
        | Mutation::RetireKek { .. }
        | Mutation::KeepOnlySeal { .. }
        | Mutation::InsertAuditKey(_)
        | Mutation::InsertAuditCheckpoint(_)
        | Mutation::PruneAudit { .. }
        | Mutation::RevokeRegistrationTokens { .. }
        | Mutation::RecoverAdmin { .. }
        | Mutation::UpsertNode(_)
        | Mutation::RemoveNode { .. }
        | Mutation::InsertClusterIdentity(_)
        | Mutation::Announce(_) => Effect::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keysafe_core::store::{DepositRecord, VersionMeta, VersionRecord, version_row};
    use keysafe_proto::api::Encoding;
    use keysafe_proto::{
        ClientFingerprint, DepositName, DepositVersion, OrgName, Principal, Timestamp,
    };
    use std::sync::Arc;

    fn key(name: &str) -> DepositKey {
        DepositKey {
            owner: Principal::Client(ClientFingerprint::parse(&"a".repeat(64)).unwrap()),
            name: DepositName::parse(name).unwrap(),
        }
    }

    fn row(k: &DepositKey, payload: &[u8]) -> VersionRow {
        let v = DepositVersion::new(1).unwrap();
        let at = Timestamp::from_unix_millis(1);
        version_row(
            DepositRecord {
                org: OrgName::parse("acme").unwrap(),
                owner: k.owner.clone(),
                name: k.name.clone(),
                current_version: v,
                current_size: payload.len() as u64,
                deleted: false,
                acl_serial: 0,
                created_at: at,
                updated_at: at,
                mac: None,
                newest_version: 1,
            },
            VersionRecord {
                meta: VersionMeta {
                    version: v,
                    size: payload.len() as u64,
                    created_at: at,
                    creator: ClientFingerprint::parse(&"a".repeat(64)).unwrap(),
                    encoding: Encoding::Raw,
                },
                kek_version: 1,
                wrapped_dek: vec![9; 60],
                ciphertext: payload.to_vec(),
            },
        )
    }

    fn cache(dir: &tempfile::TempDir, capacity: u64) -> (RowCache, PathBuf) {
        let db = dir.path().join("x.db");
        (RowCache::open(&db, capacity).unwrap(), db)
    }

    #[test]
    fn an_entry_is_served_until_any_process_announces_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (c, db) = cache(&dir, CAPACITY_BYTES);
        let k = key("k");
        let before = c.epoch();
        c.fill(&k, before, row(&k, b"one"));
        assert_eq!(c.get(&k).unwrap().1.ciphertext, b"one");
        // Another process on the same file commits a change to deposits.
        announce_change(&db).unwrap();
        assert!(c.get(&k).is_none());
        assert_eq!(c.len(), 0, "the stale entry is dropped");
    }

    #[test]
    fn a_read_that_overlapped_a_change_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (c, db) = cache(&dir, CAPACITY_BYTES);
        let k = key("k");
        let before = c.epoch();
        // The row was read, then a change was announced before the fill.
        announce_change(&db).unwrap();
        c.fill(&k, before, row(&k, b"old"));
        assert_eq!(c.len(), 0);
        assert!(c.get(&k).is_none());
    }

    fn fill_all(c: &RowCache, names: &[&str]) {
        for n in names {
            let k = key(n);
            c.fill(&k, c.epoch(), row(&k, n.as_bytes()));
        }
    }

    #[test]
    fn this_processs_write_drops_only_the_deposit_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _db) = cache(&dir, CAPACITY_BYTES);
        fill_all(&c, &["a", "b", "c"]);
        let before = c.epoch();
        c.committed(vec![
            Update::Drop(key("a")),
            Update::Keep(key("b"), row(&key("b"), b"b2")),
        ]);
        assert_eq!(c.epoch(), before + 1, "other processes are told");
        assert!(c.get(&key("a")).is_none());
        assert_eq!(c.get(&key("b")).unwrap().1.ciphertext, b"b2");
        assert_eq!(c.get(&key("c")).unwrap().1.ciphertext, b"c");
    }

    #[test]
    fn a_change_by_another_process_before_ours_empties_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (c, db) = cache(&dir, CAPACITY_BYTES);
        fill_all(&c, &["a", "b"]);
        announce_change(&db).unwrap();
        // This process's writer commits before any read noticed the other change.
        c.committed(vec![Update::Keep(key("a"), row(&key("a"), b"a2"))]);
        assert!(c.get(&key("a")).is_none());
        assert!(c.get(&key("b")).is_none());
        assert_eq!(c.len(), 0);
        // Caught up: filling and serving work again.
        fill_all(&c, &["b"]);
        assert!(c.get(&key("b")).is_some());
    }

    #[test]
    fn a_read_from_before_this_processs_write_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _db) = cache(&dir, CAPACITY_BYTES);
        let k = key("k");
        // Read before the write, filled after its update: not stored.
        let before = c.epoch();
        c.committed(vec![Update::Keep(k.clone(), row(&k, b"new"))]);
        c.fill(&k, before, row(&k, b"old"));
        assert_eq!(c.get(&k).unwrap().1.ciphertext, b"new");
        // Read and filled before the write: replaced by its update.
        let before = c.epoch();
        c.fill(&k, before, row(&k, b"old"));
        c.committed(vec![Update::Drop(k.clone())]);
        assert!(c.get(&k).is_none());
    }

    /// Readers that miss read "the file" (a counter the writer sets before announcing, as a
    /// commit precedes its announcement) and fill; a read that starts after a write was
    /// acknowledged never gets an older row.
    #[test]
    fn no_read_after_an_acknowledged_write_gets_an_older_row() {
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir().unwrap();
        let (c, _db) = cache(&dir, CAPACITY_BYTES);
        let c = Arc::new(c);
        let k = key("k");
        let file = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (c, k, file, acked, stop, served) = (
                    c.clone(),
                    k.clone(),
                    file.clone(),
                    acked.clone(),
                    stop.clone(),
                    served.clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let floor = acked.load(Ordering::SeqCst);
                        let got = match c.get(&k) {
                            Some(r) => {
                                served.fetch_add(1, Ordering::SeqCst);
                                r
                            }
                            None => {
                                let before = c.epoch();
                                let r = row(&k, &file.load(Ordering::SeqCst).to_be_bytes());
                                c.fill(&k, before, r.clone());
                                r
                            }
                        };
                        let n = u64::from_be_bytes(got.1.ciphertext[..8].try_into().unwrap());
                        assert!(n >= floor, "served {n} after {floor} was acknowledged");
                    }
                })
            })
            .collect();
        let mut n = 0u64;
        // At least 20,000 writes, and on until the readers were served from the cache (a
        // loaded machine may not run them at first), for at most ten seconds.
        let started = Instant::now();
        while n < 20_000
            || (served.load(Ordering::SeqCst) == 0 && started.elapsed() < Duration::from_secs(10))
        {
            n += 1;
            file.store(n, Ordering::SeqCst);
            let update = if n.is_multiple_of(3) {
                Update::Drop(k.clone())
            } else {
                Update::Keep(k.clone(), row(&k, &n.to_be_bytes()))
            };
            c.committed(vec![update]);
            acked.store(n, Ordering::SeqCst);
        }
        stop.store(true, Ordering::SeqCst);
        for r in readers {
            r.join().unwrap();
        }
        assert!(
            served.load(Ordering::SeqCst) > 0,
            "the cache served nothing: the test checked no cached read"
        );
    }

    #[test]
    fn the_fixed_overhead_covers_the_structures_of_an_entry() {
        let fixed = std::mem::size_of::<(DepositRecord, VersionRecord, ReadMemo)>()
            + std::mem::size_of::<DepositKey>()
            + std::mem::size_of::<Entry>()
            + 16;
        eprintln!("fixed structures: {fixed} bytes");
        assert!(ENTRY_OVERHEAD >= fixed as u64, "{fixed}");
    }

    #[test]
    fn this_processs_change_drops_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _db) = cache(&dir, CAPACITY_BYTES);
        for n in ["a", "b"] {
            let k = key(n);
            c.fill(&k, c.epoch(), row(&k, b"x"));
        }
        assert_eq!(c.len(), 2);
        let before = c.epoch();
        c.changed();
        assert_eq!(c.len(), 0);
        assert_eq!(c.epoch(), before + 1);
    }

    #[test]
    fn opening_counts_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (first, db) = cache(&dir, CAPACITY_BYTES);
        let k = key("k");
        first.fill(&k, first.epoch(), row(&k, b"x"));
        // A process that restarts (perhaps after dying between a commit and its announcement).
        let _second = RowCache::open(&db, CAPACITY_BYTES).unwrap();
        assert!(first.get(&k).is_none());
    }

    #[test]
    fn an_entry_older_than_its_bound_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _db) = cache(&dir, CAPACITY_BYTES);
        let k = key("k");
        let epoch = c.epoch();
        c.rows.insert(
            k.clone(),
            Entry {
                read_at: Instant::now()
                    .checked_sub(MAX_AGE + Duration::from_millis(1))
                    .unwrap(),
                row: row(&k, b"x"),
            },
        );
        assert!(c.get(&k).is_none());
        c.fill(&k, epoch, row(&k, b"y"));
        assert_eq!(c.get(&k).unwrap().1.ciphertext, b"y");
    }

    #[test]
    fn the_cache_holds_no_more_than_its_weight() {
        let dir = tempfile::tempdir().unwrap();
        let capacity = 64 * 1024;
        let (c, _db) = cache(&dir, capacity);
        let epoch = c.epoch();
        for n in 0..1_000 {
            let k = key(&format!("k{n}"));
            c.fill(&k, epoch, row(&k, &[7; 200]));
        }
        assert!(c.rows.weight() <= capacity, "{}", c.rows.weight());
        assert!(c.len() > 10 && c.len() < 1_000, "{}", c.len());
    }

    #[test]
    fn the_change_epoch_is_a_counter_of_eight_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (c, db) = cache(&dir, CAPACITY_BYTES);
        for _ in 0..1_000 {
            c.changed();
        }
        // One change at open, then a thousand.
        assert_eq!(c.epoch(), 1_001);
        let m = std::fs::metadata(signal_path(&db)).unwrap();
        assert_eq!(m.len(), 8);
        assert_eq!(
            std::fs::read(signal_path(&db)).unwrap(),
            1_001u64.to_ne_bytes()
        );
    }

    #[test]
    fn a_longer_epoch_file_is_not_shrunk() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(signal_path(&db), vec![0u8; 100]).unwrap();
        let c = RowCache::open(&db, CAPACITY_BYTES).unwrap();
        assert_eq!(c.epoch(), 1);
        assert_eq!(std::fs::metadata(signal_path(&db)).unwrap().len(), 100);
    }

    #[test]
    fn concurrent_increments_from_several_mappings_each_count() {
        let dir = tempfile::tempdir().unwrap();
        let (c, db) = cache(&dir, CAPACITY_BYTES);
        let start = c.epoch();
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || {
                    // Each thread its own file and mapping, as another process would have.
                    let own = ChangeSignal::open(&db).unwrap();
                    for _ in 0..1_000 {
                        own.bump();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(c.epoch(), start + 4_000);
    }

    #[test]
    fn the_change_epoch_belongs_to_the_databases_owner() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(&db, b"").unwrap();
        // As root (CI), the database is given to another user, as a data directory of the
        // server's own user is to an administration command run as root; elsewhere the owner
        // cannot be changed and there is nothing to check.
        if std::os::unix::fs::chown(&db, Some(65534), Some(65534)).is_err() {
            eprintln!("not privileged: the owner of a new epoch is the caller's, nothing to check");
            return;
        }
        let _c = RowCache::open(&db, CAPACITY_BYTES).unwrap();
        let m = std::fs::metadata(signal_path(&db)).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534));
    }

    #[test]
    fn the_change_epoch_is_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (_c, db) = cache(&dir, CAPACITY_BYTES);
        let mode = std::fs::metadata(signal_path(&db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
