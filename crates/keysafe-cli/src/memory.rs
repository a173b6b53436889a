//! Resident memory a long-running command hands back once it has started.
//!
//! Start-up touches code all over the binary (argument parsing, configuration, migrations, the
//! seal, the router and its OpenAPI document) and the kernel maps 64 KB around every page it
//! faults in, so a server that has just started holds most of its executable's code in its
//! resident set although serving runs a small part of it; the allocator also keeps the memory
//! start-up freed until it next allocates on the same thread. [`release_start_up_memory`],
//! called once the server is ready, unmaps the resident pages of the private, read-only
//! mappings that the dynamic loader made before `main` (the executable and the libraries it
//! links: code and read-only data) and that hold no page of their own, so that the kernel maps
//! back only what serving touches; and it asks mimalloc to purge the free memory of the calling
//! thread (the one that built the router) and of its arenas.
//!
//! What goes down is the process's resident set. The unmapped pages stay in the page cache (and
//! charged to the service's cgroup) until the kernel needs the memory; libraries' pages are
//! shared with every other process using them. Only mimalloc's part is memory returned to the
//! system.
//!
//! Nothing is lost: an unmapped page of a clean file mapping is read back from the file at its
//! next use, exactly as at the first. A mapping with any page of its own, in memory
//! (`Anonymous:`) or swapped out (`Swap:`), such as relocated data the loader made read-only
//! after writing it, is left alone, since unmapping it would lose what was written. So is every
//! mapping while a debugger or tracer is attached (it may be writing breakpoints).
//!
//! Only ranges that were private and read-only before `main` ([`remember_start_up_mappings`],
//! which records nothing unless the process has a single thread) are touched, because only they
//! are certain to stay where they are while other threads run: the executable and the libraries
//! it links are never unloaded, whereas a library loaded later with `dlopen` (a PKCS#11 module,
//! a Kerberos plugin) may be unloaded, and a file mapped for a while (the executable itself,
//! mapped again to symbolise a backtrace) unmapped, and their addresses reused for anonymous
//! memory between reading the list and the call, which `MADV_DONTNEED` would then zero.

use std::sync::OnceLock;

/// The file behind a mapping: its device (major, minor) and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

/// A file mapping's range, as the loader made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    pub start: usize,
    pub end: usize,
    pub file: FileId,
}

/// One private, read-only mapping whose resident pages can be unmapped.
#[derive(Debug, PartialEq, Eq)]
pub struct Droppable {
    pub start: usize,
    pub len: usize,
    /// Resident kilobytes when `/proc/self/smaps` was read.
    pub rss_kb: u64,
}

static START_UP: OnceLock<Vec<Mapped>> = OnceLock::new();

/// Remembers the private, read-only file mappings that exist now. Call it first thing in
/// `main`, before the runtime starts threads and before anything is loaded with `dlopen`: what
/// is mapped then was mapped by the dynamic loader, for objects that are never unloaded. It
/// records nothing if the process already has more than one thread, and without it
/// [`release_start_up_memory`] unmaps nothing.
pub fn remember_start_up_mappings() {
    let single_threaded = std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1);
    if !single_threaded {
        return;
    }
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        let _ = START_UP.set(read_only_file_mappings(&maps));
    }
}

/// The private, read-only, file-backed (inode not 0) mappings of `maps`, the text of
/// `/proc/self/maps`.
pub fn read_only_file_mappings(maps: &str) -> Vec<Mapped> {
    maps.lines()
        .filter_map(header)
        .filter(|h| h.private_read_only() && h.mapped.file.inode != 0)
        .map(|h| h.mapped)
        .collect()
}

/// The mappings of `smaps` (the text of `/proc/self/smaps`) whose resident pages can be unmapped
/// without losing anything: within a range of `start_up` of the same file, private (`p`), not
/// writable, with resident pages and no page of their own, neither in memory (`Anonymous:`) nor
/// swapped out (`Swap:`); a mapping whose counts are missing is left alone. A line that is
/// neither a mapping's header nor a `Key:` field makes the mapping it follows ineligible.
pub fn droppable_mappings(smaps: &str, start_up: &[Mapped]) -> Vec<Droppable> {
    let eligible = |h: &Header| {
        let m = h.mapped;
        h.private_read_only()
            && m.file.inode != 0
            && start_up
                .iter()
                .any(|s| s.file == m.file && s.start <= m.start && m.end <= s.end)
    };
    #[derive(Clone, Copy)]
    struct Current {
        mapped: Mapped,
        eligible: bool,
        rss_kb: u64,
        anonymous_kb: Option<u64>,
        swap_kb: Option<u64>,
    }
    let mut out = Vec::new();
    let mut finish = |cur: Option<Current>| {
        if let Some(c) = cur
            && c.eligible
            && c.rss_kb > 0
            && c.anonymous_kb == Some(0)
            && c.swap_kb == Some(0)
        {
            out.push(Droppable {
                start: c.mapped.start,
                len: c.mapped.end - c.mapped.start,
                rss_kb: c.rss_kb,
            });
        }
    };
    let mut current: Option<Current> = None;
    for line in smaps.lines() {
        if let Some(h) = header(line) {
            finish(current.take());
            current = Some(Current {
                mapped: h.mapped,
                eligible: eligible(&h),
                rss_kb: 0,
                anonymous_kb: None,
                swap_kb: None,
            });
            continue;
        }
        let Some(c) = current.as_mut() else {
            continue;
        };
        if let Some(kb) = field_kb(line, "Rss:") {
            c.rss_kb = kb;
        } else if let Some(kb) = field_kb(line, "Anonymous:") {
            c.anonymous_kb = Some(kb);
        } else if let Some(kb) = field_kb(line, "Swap:") {
            c.swap_kb = Some(kb);
        } else if !line
            .split_ascii_whitespace()
            .next()
            .is_some_and(|k| k.ends_with(':'))
        {
            c.eligible = false;
        }
    }
    finish(current);
    out
}

struct Header {
    mapped: Mapped,
    perms: [u8; 4],
}

impl Header {
    fn private_read_only(&self) -> bool {
        self.perms[1] == b'-' && self.perms[3] == b'p'
    }
}

/// `start-end perms offset major:minor inode [path]`, the header of a mapping in `maps` and
/// `smaps`; other lines (the `Key: value` fields of `smaps`) give `None`.
fn header(line: &str) -> Option<Header> {
    let mut parts = line.split_ascii_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms: [u8; 4] = parts.next()?.as_bytes().try_into().ok()?;
    let _offset = parts.next()?;
    let (major, minor) = parts.next()?.split_once(':')?;
    let major = u32::from_str_radix(major, 16).ok()?;
    let minor = u32::from_str_radix(minor, 16).ok()?;
    let inode: u64 = parts.next()?.parse().ok()?;
    if end <= start {
        return None;
    }
    Some(Header {
        mapped: Mapped {
            start,
            end,
            file: FileId {
                major,
                minor,
                inode,
            },
        },
        perms,
    })
}

fn field_kb(line: &str, key: &str) -> Option<u64> {
    let rest = line.strip_prefix(key)?.trim();
    rest.strip_suffix("kB")?.trim().parse().ok()
}

/// What [`release_start_up_memory`] did.
#[derive(Debug, Default)]
pub struct Released {
    /// Mappings unmapped, and their resident kilobytes before.
    pub mappings: usize,
    pub file_kb: u64,
}

/// Unmaps the resident pages of the mappings [`droppable_mappings`] finds among those
/// [`remember_start_up_mappings`] remembered, and returns the allocator's free memory to the
/// system. Best effort: a mapping the kernel refuses (locked) is skipped.
pub fn release_start_up_memory() -> Released {
    mimalloc_collect();
    let Some(start_up) = START_UP.get() else {
        return Released::default();
    };
    if traced() {
        return Released::default();
    }
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return Released::default();
    };
    unmap(droppable_mappings(&smaps, start_up))
}

/// `MADV_DONTNEED` on each of `list`, which [`droppable_mappings`] chose among ranges that stay
/// mapped for the life of the process.
fn unmap(list: Vec<Droppable>) -> Released {
    let mut released = Released::default();
    for m in list {
        // SAFETY: the range lies inside a private, read-only range the dynamic loader mapped
        // before `main` for the executable or a library it links; those objects are never
        // unloaded, so it stays mapped to the same file for the life of the process. As the
        // kernel reported it just now, it holds no page of its own, in memory or swapped out,
        // so every page MADV_DONTNEED unmaps is an unmodified copy of the file, which the next
        // access maps again with the same bytes. keysafe never writes to read-only mappings;
        // what could between the report and this call is a party from outside (a debugger's
        // breakpoint, a write through /proc/PID/mem, a uprobe), which would be dropped: no
        // tracer was attached when this release began, and the packaged unit sets
        // `MemoryDenyWriteExecute=yes`.
        #[allow(unsafe_code)]
        let r = unsafe {
            rustix::mm::madvise(
                m.start as *mut core::ffi::c_void,
                m.len,
                rustix::mm::Advice::LinuxDontNeed,
            )
        };
        if r.is_ok() {
            released.mappings += 1;
            released.file_kb += m.rss_kb;
        }
    }
    released
}

/// Whether a debugger or tracer is attached (`TracerPid:` in `/proc/self/status` is not 0, or
/// cannot be read).
fn traced() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .is_none_or(|pid| pid.trim() != "0")
}

/// [`release_start_up_memory`], and one debug line saying what it released.
pub fn release_start_up_memory_and_log() {
    let r = release_start_up_memory();
    tracing::debug!(
        mappings = r.mappings,
        file_kb = r.file_kb,
        "unmapped the code and read-only data start-up touched; serving maps back what it runs"
    );
}

fn mimalloc_collect() {
    // SAFETY: `mi_collect` takes no pointer and may be called from any thread at any time; with
    // mimalloc as the global allocator it purges this thread's free pages and the free memory
    // of the process's arenas, and without it (tests) it only tidies mimalloc's own empty heap.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    // At start-up: the executable's code and read-only data, its writable data, libc, a file
    // with the executable's inode on another device, anonymous memory and the stack.
    const MAPS: &str = "\
55d0c0000000-55d0c0a10000 r--p 00000000 fd:01 1234 /usr/bin/keysafe
55d0c0a10000-55d0c0a40000 rw-p 00a10000 fd:01 1234 /usr/bin/keysafe
55d0c0a40000-55d0c0a60000 rw-p 00000000 00:00 0
7f0000300000-7f0000400000 r-xp 00000000 fd:01 77 /usr/lib/libc.so.6
7f0000400000-7f0000500000 r-xp 00000000 fd:02 1234 /mnt/other/same-inode
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
";

    // Later: the loader's ranges split by mprotect, plus mappings made after start-up.
    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 1234 /usr/bin/keysafe
Size:               1024 kB
Rss:                 512 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd mr mw me
55d0c0100000-55d0c0900000 r-xp 00100000 fd:01 1234 /usr/bin/keysafe
Size:               8192 kB
Rss:                6000 kB
Anonymous:             0 kB
Swap:                  0 kB
SwapPss:               0 kB
55d0c0900000-55d0c0980000 r--p 00900000 fd:01 1234 /usr/bin/keysafe
Size:                512 kB
Rss:                 512 kB
Anonymous:           500 kB
Swap:                  0 kB
55d0c0980000-55d0c0a00000 r--p 00980000 fd:01 1234 /usr/bin/keysafe
Size:                512 kB
Rss:                 400 kB
Anonymous:             0 kB
Swap:                  8 kB
55d0c0a00000-55d0c0a04000 r-xp 00a00000 fd:01 1234 /usr/bin/keysafe
Size:                 16 kB
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  0 kB
55d0c0a04000-55d0c0a08000 r--p 00a04000 fd:01 1234 /usr/bin/keysafe
Size:                 16 kB
Rss:                  16 kB
Swap:                  0 kB
55d0c0a08000-55d0c0a0c000 r--p 00a08000 fd:01 1234 /usr/bin/keysafe
Size:                 16 kB
Rss:                  16 kB
Anonymous:             0 kB
55d0c0a0c000-55d0c0a10000 r--p 00a0c000 fd:01 1234 /usr/bin/keysafe
Size:                 16 kB
Rss:                  16 kB
Anonymous:             0 kB
a line that is not a field
Swap:                  0 kB
55d0c0a10000-55d0c0a20000 r--p 00a10000 fd:01 1234 /usr/bin/keysafe
Size:                 64 kB
Rss:                  64 kB
Anonymous:             0 kB
Swap:                  0 kB
55d0c0a20000-55d0c0a30000 rw-p 00a20000 fd:01 1234 /usr/bin/keysafe
Size:                 64 kB
Rss:                  64 kB
Anonymous:            64 kB
Swap:                  0 kB
7f0000000000-7f0000100000 rw-s 00000000 fd:01 99 /data/keysafe.db-shm
Size:               1024 kB
Rss:                  32 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000100000-7f0000200000 r--p 00000000 fd:01 1234 /usr/bin/keysafe
Size:               1024 kB
Rss:                1024 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000200000-7f0000300000 r-xp 00000000 00:00 0
Size:               1024 kB
Rss:                1024 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000300000-7f0000400000 r-xp 00000000 fd:01 77 /usr/lib/libc.so.6
Size:               1024 kB
Rss:                 200 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000400000-7f0000500000 r-xp 00000000 fd:02 1234 /mnt/other/same-inode
Size:               1024 kB
Rss:                 200 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000500000-7f0000600000 r-xp 00000000 fd:01 88 /usr/lib/pkcs11/module.so
Size:               1024 kB
Rss:                 300 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000600000-7f0000700000 r-xp 00000000 fd:01 77 /usr/lib/libc.so.6
Size:               1024 kB
Rss:                 100 kB
Anonymous:             0 kB
Swap:                  0 kB
";

    fn d(start: usize, len: usize, rss_kb: u64) -> Droppable {
        Droppable { start, len, rss_kb }
    }

    #[test]
    fn the_start_up_mappings_are_the_private_read_only_file_backed_ones() {
        let m = read_only_file_mappings(MAPS);
        let exe = FileId {
            major: 0xfd,
            minor: 1,
            inode: 1234,
        };
        assert_eq!(
            m,
            vec![
                Mapped {
                    start: 0x55d0c0000000,
                    end: 0x55d0c0a10000,
                    file: exe
                },
                Mapped {
                    start: 0x7f0000300000,
                    end: 0x7f0000400000,
                    file: FileId {
                        major: 0xfd,
                        minor: 1,
                        inode: 77
                    }
                },
                Mapped {
                    start: 0x7f0000400000,
                    end: 0x7f0000500000,
                    file: FileId {
                        major: 0xfd,
                        minor: 2,
                        inode: 1234
                    }
                },
            ],
            "left out: writable data, anonymous memory, the stack"
        );
    }

    #[test]
    fn only_clean_private_read_only_ranges_the_loader_mapped_are_dropped() {
        let got = droppable_mappings(SMAPS, &read_only_file_mappings(MAPS));
        assert_eq!(
            got,
            vec![
                d(0x55d0c0000000, 0x100000, 512),
                d(0x55d0c0100000, 0x800000, 6000),
                d(0x7f0000300000, 0x100000, 200),
                d(0x7f0000400000, 0x100000, 200),
            ],
            "left out: relocated read-only data (anonymous pages), the same with a page \
             swapped out, a mapping with nothing resident, one whose anonymous count is \
             missing, one whose swap count is missing, one followed by a line that is not a \
             field, a range that was writable at start-up, writable data, a shared mapping, the \
             executable mapped again after start-up, anonymous memory, a library loaded after \
             start-up, and libc mapped again outside its start-up range"
        );
        // The same inode on another device is another file: dropped above only because it was
        // among the start-up mappings.
        let only_exe: Vec<Mapped> = read_only_file_mappings(MAPS)
            .into_iter()
            .filter(|m| m.file.inode == 1234 && m.file.minor == 1)
            .collect();
        assert_eq!(
            droppable_mappings(SMAPS, &only_exe),
            vec![
                d(0x55d0c0000000, 0x100000, 512),
                d(0x55d0c0100000, 0x800000, 6000)
            ]
        );
        assert!(droppable_mappings(SMAPS, &[]).is_empty());
    }

    #[test]
    fn garbage_is_skipped() {
        let all = [Mapped {
            start: 0,
            end: usize::MAX,
            file: FileId {
                major: 0xfd,
                minor: 1,
                inode: 1234,
            },
        }];
        let clean = "Rss: 4 kB\nAnonymous: 0 kB\nSwap: 0 kB\n";
        assert!(droppable_mappings("", &all).is_empty());
        assert!(droppable_mappings(&format!("not a mapping\n{clean}"), &all).is_empty());
        assert_eq!(
            droppable_mappings(&format!("1000-2000 r-xp 0 fd:01 1234 /x\n{clean}"), &all).len(),
            1,
            "the well-formed control"
        );
        for bad in [
            "2000-1000 r-xp 0 fd:01 1234 /x",
            "1000-2000 r-xp 0 fd01 1234 /x",
            "1000-2000 r-x 0 fd:01 1234 /x",
            "1000-2000 r-xp 0 fd:01 x /x",
        ] {
            assert!(
                droppable_mappings(&format!("{bad}\n{clean}"), &all).is_empty(),
                "{bad}"
            );
            assert!(read_only_file_mappings(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn nothing_is_remembered_once_other_threads_run() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        remember_start_up_mappings();
        assert!(START_UP.get().is_none());
        drop(tx);
        let _ = other.join();
    }

    /// The kernel's own account, on real mappings of a file: a private mapping in which one page
    /// was written and then made read-only is left alone; an unwritten one is dropped, and reads
    /// the same bytes afterwards.
    #[test]
    fn a_written_page_keeps_a_mapping_out_and_a_dropped_one_reads_the_same() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mapped");
        let content: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let meta = file.metadata().expect("metadata");
        let id = FileId {
            major: rustix::fs::major(meta.dev()),
            minor: rustix::fs::minor(meta.dev()),
            inode: meta.ino(),
        };
        // SAFETY: private mappings of a file this test alone created and never changes.
        #[allow(unsafe_code)]
        let (mut written, clean) = unsafe {
            (
                memmap2::MmapOptions::new()
                    .map_copy(&file)
                    .expect("map_copy"),
                memmap2::MmapOptions::new()
                    .map_copy_read_only(&file)
                    .expect("map_copy_read_only"),
            )
        };
        written[4096] ^= 0xff;
        let written = written.make_read_only().expect("read-only");
        assert_eq!(clean[..], content[..], "resident, as the file");
        let range = |m: &memmap2::Mmap| Mapped {
            start: m.as_ptr() as usize,
            end: m.as_ptr() as usize + m.len(),
            file: id,
        };
        let start_up = [range(&written), range(&clean)];
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let found = droppable_mappings(&smaps, &start_up);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].start, clean.as_ptr() as usize);
        let released = unmap(found);
        assert_eq!(released.mappings, 1);
        assert_eq!(clean[..], content[..], "mapped back from the file");
        assert_eq!(written[4096], content[4096] ^ 0xff, "the written page kept");
        assert_eq!(written[..4096], content[..4096]);
    }

    /// This test process's own code and libraries: resident before, and after unmapping what
    /// `droppable_mappings` chooses, nearly all of it is gone while the process goes on running
    /// that same code (the test harness, this function) without harm.
    #[test]
    fn unmapping_this_processs_clean_code_leaves_it_running() {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let start_up = read_only_file_mappings(&maps);
        let resident = || -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
            droppable_mappings(&smaps, &start_up)
                .iter()
                .map(|m| m.rss_kb)
                .sum()
        };
        let before = resident();
        assert!(before > 0, "a running process has resident code");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let released = unmap(droppable_mappings(&smaps, &start_up));
        assert!(
            released.mappings > 0 && released.file_kb > 0,
            "{released:?}"
        );
        let after = resident();
        assert!(
            after < before,
            "resident clean pages: {before} kB before, {after} kB after"
        );
        let s = format!("{:x}", 0xdead_beefu32);
        assert_eq!(u32::from_str_radix(&s, 16).expect("parse"), 0xdead_beef);
    }
}
