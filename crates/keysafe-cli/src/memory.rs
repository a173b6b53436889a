//! Memory a long-running command hands back once it has started.
//!
//! Start-up touches code all over the binary (argument parsing, configuration, migrations, the
//! seal, the router and its OpenAPI document) and the kernel maps 64 KB around every page it
//! faults in, so a server that has just started holds most of its executable's code resident
//! although serving runs a small part of it; the allocator also keeps the memory start-up freed
//! until it next allocates on the same thread. [`release_start_up_memory`], called once the
//! server is ready, unmaps the resident pages of the private, read-only mappings that the
//! dynamic loader made before `main` (the executable and the libraries it links: code and
//! read-only data, never written) and that hold no page of their own, so that the kernel maps
//! back only what serving touches; and it asks mimalloc to return the memory it holds free.
//! Nothing is lost: an unmapped page of a clean file mapping is read back from the page cache
//! at its next use, exactly as at the first. A mapping with any anonymous page (relocated data
//! made read-only after the loader wrote it, a page patched by a debugger) is left alone, since
//! unmapping it would lose what was written.
//!
//! Only ranges the loader mapped before `main` ([`remember_start_up_mappings`]) are touched,
//! because only they are certain to stay where they are while other threads run: the
//! executable and the libraries it links are never unloaded, whereas a library loaded later
//! with `dlopen` (a PKCS#11 module, a Kerberos plugin) may be unloaded, and a file mapped for a
//! while (the executable itself, mapped again to symbolise a backtrace) unmapped, and their
//! addresses reused for anonymous memory between reading the list and the call, which
//! `MADV_DONTNEED` would then zero.

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

/// Remembers the file mappings that exist now. Call it first thing in `main`, before the runtime
/// starts threads and before anything is loaded with `dlopen`: what is mapped then was mapped
/// by the dynamic loader, for objects that are never unloaded. Without it,
/// [`release_start_up_memory`] unmaps nothing.
pub fn remember_start_up_mappings() {
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        let _ = START_UP.set(file_mappings(&maps));
    }
}

/// The file-backed mappings (inode not 0) of `maps`, the text of `/proc/self/maps`.
pub fn file_mappings(maps: &str) -> Vec<Mapped> {
    maps.lines()
        .filter_map(header)
        .filter(|h| h.mapped.file.inode != 0)
        .map(|h| h.mapped)
        .collect()
}

/// The mappings of `smaps` (the text of `/proc/self/smaps`) whose resident pages can be unmapped
/// without losing anything: within a range of `start_up` of the same file, private (`p`), not
/// writable, with resident pages and no anonymous (copied-on-write) page. Unparseable entries
/// are skipped.
pub fn droppable_mappings(smaps: &str, start_up: &[Mapped]) -> Vec<Droppable> {
    let eligible = |h: &Header| {
        let m = h.mapped;
        h.perms[1] == b'-'
            && h.perms[3] == b'p'
            && m.file.inode != 0
            && start_up
                .iter()
                .any(|s| s.file == m.file && s.start <= m.start && m.end <= s.end)
    };
    let mut out = Vec::new();
    let mut current: Option<(Mapped, bool)> = None;
    let mut rss_kb = 0u64;
    let mut anonymous_kb = u64::MAX;
    let mut finish = |cur: Option<(Mapped, bool)>, rss: u64, anon: u64| {
        if let Some((m, true)) = cur
            && rss > 0
            && anon == 0
        {
            out.push(Droppable {
                start: m.start,
                len: m.end - m.start,
                rss_kb: rss,
            });
        }
    };
    for line in smaps.lines() {
        if let Some(h) = header(line) {
            finish(current.take(), rss_kb, anonymous_kb);
            current = Some((h.mapped, eligible(&h)));
            rss_kb = 0;
            anonymous_kb = u64::MAX;
        } else if let Some(kb) = field_kb(line, "Rss:") {
            rss_kb = kb;
        } else if let Some(kb) = field_kb(line, "Anonymous:") {
            anonymous_kb = kb;
        }
    }
    finish(current, rss_kb, anonymous_kb);
    out
}

struct Header {
    mapped: Mapped,
    perms: [u8; 4],
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
    let mut released = Released::default();
    let Some(start_up) = START_UP.get() else {
        return released;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return released;
    };
    for m in droppable_mappings(&smaps, start_up) {
        // SAFETY: the range is a private, read-only mapping with no anonymous page, as the
        // kernel reported it just now, inside a range the dynamic loader mapped before `main`
        // for the executable or a library it links. Those objects are never unloaded, so the
        // range stays mapped to the same file for the life of the process, and nothing in this
        // process writes to read-only mappings: for every page in it MADV_DONTNEED only unmaps
        // an unmodified copy of the file, which the next access maps again with the same
        // bytes. No value any code can observe changes.
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

    const MAPS: &str = "\
55d0c0000000-55d0c0a10000 r--p 00000000 fd:01 1234 /usr/bin/keysafe
55d0c0a10000-55d0c0a40000 rw-p 00a10000 fd:01 1234 /usr/bin/keysafe
55d0c0a40000-55d0c0a60000 rw-p 00000000 00:00 0
7f0000300000-7f0000400000 r-xp 00000000 fd:01 77 /usr/lib/libc.so.6
7f0000400000-7f0000500000 r-xp 00000000 fd:02 1234 /mnt/other/same-inode
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
";

    // Later: the loader's ranges split by mprotect (code, relocated data made read-only), plus
    // mappings made after start-up.
    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 1234 /usr/bin/keysafe
Size:               1024 kB
Rss:                 512 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
55d0c0100000-55d0c0900000 r-xp 00100000 fd:01 1234 /usr/bin/keysafe
Size:               8192 kB
Rss:                6000 kB
Anonymous:             0 kB
55d0c0900000-55d0c0a00000 r--p 00900000 fd:01 1234 /usr/bin/keysafe
Size:               1024 kB
Rss:                1024 kB
Anonymous:          1000 kB
55d0c0a00000-55d0c0a10000 r-xp 00a00000 fd:01 1234 /usr/bin/keysafe
Size:                 64 kB
Rss:                   0 kB
Anonymous:             0 kB
55d0c0a10000-55d0c0a20000 r--p 00a10000 fd:01 1234 /usr/bin/keysafe
Size:                 64 kB
Rss:                  64 kB
55d0c0a20000-55d0c0a30000 rw-p 00a20000 fd:01 1234 /usr/bin/keysafe
Size:                 64 kB
Rss:                  64 kB
Anonymous:            64 kB
55d0c0a30000-55d0c0a40000 r--s 00a30000 fd:01 1234 /usr/bin/keysafe
Size:                 64 kB
Rss:                  64 kB
Anonymous:             0 kB
7f0000000000-7f0000100000 rw-s 00000000 fd:01 99 /data/keysafe.db-shm
Size:               1024 kB
Rss:                  32 kB
Anonymous:             0 kB
7f0000100000-7f0000200000 r--p 00000000 fd:01 1234 /usr/bin/keysafe
Size:               1024 kB
Rss:                1024 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 r-xp 00000000 00:00 0
Size:               1024 kB
Rss:                1024 kB
Anonymous:             0 kB
7f0000300000-7f0000400000 r-xp 00000000 fd:01 77 /usr/lib/libc.so.6
Size:               1024 kB
Rss:                 200 kB
Anonymous:             0 kB
7f0000400000-7f0000500000 r-xp 00000000 fd:02 1234 /mnt/other/same-inode
Size:               1024 kB
Rss:                 200 kB
Anonymous:             0 kB
7f0000500000-7f0000600000 r-xp 00000000 fd:01 88 /usr/lib/pkcs11/module.so
Size:               1024 kB
Rss:                 300 kB
Anonymous:             0 kB
7f0000600000-7f0000700000 r-xp 00000000 fd:01 77 /usr/lib/libc.so.6
Size:               1024 kB
Rss:                 100 kB
Anonymous:             0 kB
";

    fn d(start: usize, len: usize, rss_kb: u64) -> Droppable {
        Droppable { start, len, rss_kb }
    }

    #[test]
    fn the_start_up_mappings_are_the_file_backed_ones() {
        let m = file_mappings(MAPS);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(
            m[0],
            Mapped {
                start: 0x55d0c0000000,
                end: 0x55d0c0a10000,
                file: FileId {
                    major: 0xfd,
                    minor: 1,
                    inode: 1234
                }
            }
        );
        assert!(m.iter().all(|m| m.file.inode != 0));
    }

    #[test]
    fn only_clean_private_read_only_ranges_the_loader_mapped_are_dropped() {
        let got = droppable_mappings(SMAPS, &file_mappings(MAPS));
        assert_eq!(
            got,
            vec![
                d(0x55d0c0000000, 0x100000, 512),
                d(0x55d0c0100000, 0x800000, 6000),
                d(0x7f0000300000, 0x100000, 200),
                d(0x7f0000400000, 0x100000, 200),
            ],
            "left out: relocated read-only data (anonymous pages), a mapping with nothing \
             resident, one whose anonymous count is missing, writable data, shared mappings, \
             the executable mapped again after start-up, anonymous memory, a library loaded \
             after start-up, and libc mapped again outside its start-up range"
        );
        // The same file id on another device is another file: dropped above only because it
        // was among the start-up mappings; not when it was not.
        let only_exe: Vec<Mapped> = file_mappings(MAPS)
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
        assert!(droppable_mappings("", &all).is_empty());
        assert!(droppable_mappings("not a mapping\nRss: 5 kB\nAnonymous: 0 kB\n", &all).is_empty());
        for bad in [
            "2000-1000 r-xp 0 fd:01 1234 /x",
            "1000-2000 r-xp 0 fd01 1234 /x",
            "1000-2000 r-x 0 fd:01 1234 /x",
            "1000-2000 r-xp 0 fd:01 x /x",
        ] {
            let text = format!("{bad}\nRss: 4 kB\nAnonymous: 0 kB\n");
            assert!(droppable_mappings(&text, &all).is_empty(), "{bad}");
            assert!(file_mappings(bad).is_empty(), "{bad}");
        }
    }

    /// This test process's own code: resident before, and after the release nearly all of it
    /// is unmapped, while the process goes on running that same code (the test harness, this
    /// function) without harm.
    #[test]
    fn the_release_unmaps_this_processs_clean_code_and_the_process_runs_on() {
        remember_start_up_mappings();
        let start_up = START_UP.get().expect("remembered");
        let resident = || -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
            droppable_mappings(&smaps, start_up)
                .iter()
                .map(|m| m.rss_kb)
                .sum()
        };
        let before = resident();
        assert!(before > 0, "a running process has resident code");
        let released = release_start_up_memory();
        assert!(
            released.mappings > 0 && released.file_kb > 0,
            "{released:?}"
        );
        let after = resident();
        assert!(
            after < before,
            "resident clean pages: {before} kB before, {after} kB after"
        );
        // Code and read-only data work after the release: run through formatting and a parse
        // again.
        let s = format!("{:x}", 0xdead_beefu32);
        assert_eq!(u32::from_str_radix(&s, 16).expect("parse"), 0xdead_beef);
        assert_eq!(file_mappings(MAPS).len(), 4);
    }
}
