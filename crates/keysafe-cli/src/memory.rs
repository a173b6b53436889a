//! Memory a long-running command hands back once it has started.
//!
//! Start-up touches code all over the binary (argument parsing, configuration, migrations, the
//! seal, the router and its OpenAPI document) and the kernel maps 64 KB around every page it
//! faults in, so a server that has just started holds most of its executable's code resident
//! although serving runs a small part of it; the allocator also keeps the memory start-up freed
//! until it next allocates on the same thread. [`release_start_up_memory`], called once the
//! server is ready, unmaps the resident pages of every private, read-only file mapping that holds
//! no page of its own (code and read-only data, never written) so that the kernel maps back only
//! what serving touches, and asks mimalloc to return the memory it holds free. Nothing is lost:
//! an unmapped page of a clean file mapping is read back from the page cache at its next use,
//! exactly as at the first. A mapping with any anonymous page (relocated data made read-only
//! after the loader wrote it, a page patched by a debugger) is left alone, since unmapping it
//! would lose what was written.

/// One private, read-only file mapping whose resident pages can be unmapped.
#[derive(Debug, PartialEq, Eq)]
pub struct Droppable {
    pub start: usize,
    pub len: usize,
    /// Resident kilobytes when `/proc/self/smaps` was read.
    pub rss_kb: u64,
}

/// The mappings of `smaps` (the text of `/proc/self/smaps`) whose resident pages can be unmapped
/// without losing anything: private (`p`), not writable, backed by a file (inode not 0), with
/// resident pages and no anonymous (copied-on-write) page. Unparseable entries are skipped.
pub fn droppable_mappings(smaps: &str) -> Vec<Droppable> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize, bool)> = None; // start, len, eligible by its header
    let mut rss_kb = 0u64;
    let mut anonymous_kb = u64::MAX;
    let mut finish = |cur: Option<(usize, usize, bool)>, rss: u64, anon: u64| {
        if let Some((start, len, true)) = cur
            && rss > 0
            && anon == 0
        {
            out.push(Droppable {
                start,
                len,
                rss_kb: rss,
            });
        }
    };
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line) {
            finish(current.take(), rss_kb, anonymous_kb);
            current = Some(header);
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

/// `start-end perms offset dev inode [path]`: the range and whether the mapping qualifies by its
/// header alone. Other lines (the `Key: value` fields) give `None`.
fn mapping_header(line: &str) -> Option<(usize, usize, bool)> {
    let mut parts = line.split_ascii_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = parts.next()?.as_bytes();
    let _offset = parts.next()?;
    let _dev = parts.next()?;
    let inode: u64 = parts.next()?.parse().ok()?;
    if perms.len() != 4 || end <= start {
        return None;
    }
    let eligible = perms[1] == b'-' && perms[3] == b'p' && inode != 0;
    Some((start, end - start, eligible))
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

/// Unmaps the resident pages of the mappings [`droppable_mappings`] finds in this process and
/// returns the allocator's free memory to the system. Best effort: a mapping the kernel refuses
/// (locked, or gone since `smaps` was read) is skipped.
pub fn release_start_up_memory() -> Released {
    mimalloc_collect();
    let mut released = Released::default();
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return released;
    };
    for m in droppable_mappings(&smaps) {
        // SAFETY: the range is a whole private, read-only file mapping of this process with no
        // anonymous page, as the kernel reported it just now. Nothing in this process writes
        // to read-only mappings or replaces them, so for every page in it MADV_DONTNEED only
        // unmaps an unmodified copy of the file, which the next access maps again with the
        // same bytes: no value any code can observe changes. A range that is no longer mapped
        // makes the call fail (ENOMEM), which is ignored.
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
55d0c0a00000-55d0c0a10000 rw-p 00a00000 fd:01 1234 /usr/bin/keysafe
Size:                 64 kB
Rss:                  64 kB
Anonymous:            64 kB
7f0000000000-7f0000100000 rw-s 00000000 fd:01 99 /data/keysafe.db-shm
Size:               1024 kB
Rss:                  32 kB
Anonymous:             0 kB
7f0000100000-7f0000200000 r--s 00000000 fd:01 98 /data/shared-ro
Size:               1024 kB
Rss:                  32 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 r-xp 00000000 00:00 0
Size:               1024 kB
Rss:                1024 kB
Anonymous:             0 kB
7f0000300000-7f0000400000 r-xp 00000000 fd:01 77 /usr/lib/libc.so.6
Size:               1024 kB
Rss:                   0 kB
Anonymous:             0 kB
7f0000400000-7f0000500000 r-xp 00000000 fd:01 78 /usr/lib/libsqlite3.so.0
Size:               1024 kB
Rss:                 200 kB
";

    #[test]
    fn only_clean_private_read_only_file_mappings_with_resident_pages_are_dropped() {
        let got = droppable_mappings(SMAPS);
        assert_eq!(
            got,
            vec![
                Droppable {
                    start: 0x55d0c0000000,
                    len: 0x100000,
                    rss_kb: 512
                },
                Droppable {
                    start: 0x55d0c0100000,
                    len: 0x800000,
                    rss_kb: 6000
                },
            ],
            "left out: relocated read-only data (anonymous pages), writable data, shared \
             mappings, anonymous memory, a mapping with nothing resident, and one whose \
             anonymous count is missing"
        );
    }

    #[test]
    fn garbage_is_skipped() {
        assert!(droppable_mappings("").is_empty());
        assert!(droppable_mappings("not a mapping\nRss: 5 kB\nAnonymous: 0 kB\n").is_empty());
        assert!(
            droppable_mappings("2000-1000 r-xp 0 fd:01 5 /x\nRss: 4 kB\nAnonymous: 0 kB\n")
                .is_empty(),
            "an inverted range"
        );
    }

    /// This test process's own code: resident before, and after the release nearly all of it
    /// is unmapped, while the process goes on running that same code (the test harness, this
    /// function) without harm.
    #[test]
    fn the_release_unmaps_this_processs_clean_code_and_the_process_runs_on() {
        let resident = || -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
            droppable_mappings(&smaps).iter().map(|m| m.rss_kb).sum()
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
            "resident clean file pages: {before} kB before, {after} kB after"
        );
        // Code and read-only data work after the release: run through formatting, hashing and
        // a parse again.
        let s = format!("{:x}", 0xdead_beefu32);
        assert_eq!(s.parse::<String>().expect("parse"), "deadbeef");
        assert_eq!(droppable_mappings(SMAPS).len(), 2);
    }
}
