//! Reading and writing file contents through the block format: read-modify-write of partial
//! blocks, the file header, holes, truncation and preallocation. One [`FileState`] per inode
//! serialises writers (and lets readers share) across every handle that has the file open, as
//! gocryptfs's open-file table does; the backing descriptor is opened read-write because every
//! partial write needs the old block.

use super::Res;
use super::backing::{errno, io_errno};
use crate::format::content::{
    self, CIPHER_BS, ContentCipher, FileId, HEADER_LEN, PLAIN_BS, block_cipher_off, block_of,
};
use fuser::Errno;
use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, RwLock};

/// Writes of this many blocks and more (256 KiB; the kernel sends up to 1 MiB) are encrypted
/// on two threads: one file's writes arrive one after the other, so a second core helps. Reads
/// are not split: readahead already sends several at once, served by several FUSE threads,
/// and a helper thread per read only adds scheduling on a busy machine.
const PARALLEL_BLOCKS: usize = 64;

/// Shared per-inode state.
#[derive(Debug, Default)]
pub struct FileState {
    /// Writers (write, truncate, fallocate) take it exclusively, readers shared.
    pub lock: RwLock<Inner>,
}

#[derive(Debug, Default)]
pub struct Inner {
    /// The file ID from the header, once read or written.
    pub id: Mutex<Option<FileId>>,
    /// Where the last write ended: a write starting there cannot open a hole.
    pub last_write_end: Option<u64>,
}

fn eio<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Errno {
    move |e| {
        tracing::warn!(error = %e, "{what}");
        Errno::EIO
    }
}

/// Reads as much of `buf` as the file has at `off` (short only at the end of the file).
fn read_full(f: &File, buf: &mut [u8], off: u64) -> Res<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(r) => n += r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_errno(&e)),
        }
    }
    Ok(n)
}

fn size_of(f: &File) -> Res<u64> {
    Ok(rustix::fs::fstat(f).map_err(errno)?.st_size as u64)
}

/// The file ID of a file, read from its header; `None` for an empty file (or one holding only a
/// header, which gocryptfs also treats as empty so that a new header replaces it).
fn file_id(inner: &Inner, f: &File) -> Res<Option<FileId>> {
    let mut id = inner.id.lock().map_err(|_| Errno::EIO)?;
    if let Some(i) = *id {
        return Ok(Some(i));
    }
    let mut buf = [0u8; HEADER_LEN as usize + 1];
    let n = read_full(f, &mut buf, 0)?;
    if n < buf.len() {
        return Ok(None);
    }
    let parsed =
        FileId::parse_header(&buf[..HEADER_LEN as usize]).map_err(eio("corrupt file header"))?;
    *id = Some(parsed);
    Ok(Some(parsed))
}

thread_local! {
    /// Per-thread buffers for ciphertext and plaintext of one request, reused so that a large
    /// read or write does not allocate (and fault in) a megabyte each time.
    static CIPHER_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    static PLAIN_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a split of the work in two halves on two threads when there is enough of it.
fn maybe_parallel<A: Send, B: Send>(
    blocks: usize,
    a: impl FnOnce() -> Res<A> + Send,
    b: impl FnOnce() -> Res<B> + Send,
) -> Res<(A, B)> {
    if blocks < PARALLEL_BLOCKS {
        return Ok((a()?, b()?));
    }
    std::thread::scope(|s| {
        let h = s.spawn(b);
        let ra = a();
        let rb = h.join().unwrap_or(Err(Errno::EIO));
        Ok((ra?, rb?))
    })
}

/// Decrypts stored blocks (`cipher`, starting with block `first`) into `plain`, block i at
/// `i * PLAIN_BS`; returns the plaintext length (the last block may be short).
fn decrypt_run(
    c: &ContentCipher,
    cipher: &[u8],
    first: u64,
    id: &FileId,
    plain: &mut [u8],
) -> Res<usize> {
    let mut len = 0;
    for (i, (chunk, out)) in cipher
        .chunks(CIPHER_BS as usize)
        .zip(plain.chunks_mut(PLAIN_BS as usize))
        .enumerate()
    {
        let n = c
            .decrypt_block_into(chunk, first + i as u64, Some(id), out)
            .map_err(eio("corrupt or tampered block"))?;
        len = i * PLAIN_BS as usize + n;
    }
    Ok(len)
}

/// Plaintext `[off, off+len)` (shorter at the end of the file), handed to `consume`.
pub fn read_with<T>(
    c: &ContentCipher,
    inner: &Inner,
    f: &File,
    off: u64,
    len: u64,
    consume: impl FnOnce(&[u8]) -> T,
) -> Res<T> {
    if len == 0 {
        return Ok(consume(&[]));
    }
    let Some(id) = file_id(inner, f)? else {
        return Ok(consume(&[]));
    };
    let first = block_of(off);
    let last = block_of(off + len - 1);
    let blocks = (last - first + 1) as usize;
    CIPHER_BUF.with_borrow_mut(|cipher| {
        PLAIN_BUF.with_borrow_mut(|plain| {
            cipher.resize(blocks * CIPHER_BS as usize, 0);
            let n = read_full(f, cipher, block_cipher_off(first))?;
            let cipher = &cipher[..n];
            plain.resize(blocks * PLAIN_BS as usize, 0);
            let total = decrypt_run(c, cipher, first, &id, plain)?;
            let skip = (off - first * PLAIN_BS) as usize;
            if total <= skip {
                return Ok(consume(&[]));
            }
            let end = (skip + len as usize).min(total);
            Ok(consume(&plain[skip..end]))
        })
    })
}

/// Plaintext `[off, off+len)` as an owned buffer (for read-modify-write of one block).
pub fn read(c: &ContentCipher, inner: &Inner, f: &File, off: u64, len: u64) -> Res<Vec<u8>> {
    // Not through the thread-local buffers: a write holds them while it reads an old block.
    let Some(id) = file_id(inner, f)? else {
        return Ok(Vec::new());
    };
    let first = block_of(off);
    let last = block_of(off + len.max(1) - 1);
    let blocks = (last - first + 1) as usize;
    let mut cipher = vec![0u8; blocks * CIPHER_BS as usize];
    let n = read_full(f, &mut cipher, block_cipher_off(first))?;
    let mut plain = vec![0u8; blocks * PLAIN_BS as usize];
    let total = decrypt_run(c, &cipher[..n], first, &id, &mut plain)?;
    let skip = (off - first * PLAIN_BS) as usize;
    if total <= skip || len == 0 {
        return Ok(Vec::new());
    }
    plain.truncate((skip + len as usize).min(total));
    plain.drain(..skip);
    Ok(plain)
}

/// Encrypts consecutive plaintext blocks (whole, except possibly the first and last) starting
/// at block `first` into `out`, laid out exactly as on disk.
fn encrypt_run(
    c: &ContentCipher,
    blocks: &[std::borrow::Cow<'_, [u8]>],
    first: u64,
    id: &FileId,
    out: &mut [u8],
) -> Res<()> {
    let mut pos = 0;
    for (i, b) in blocks.iter().enumerate() {
        let n = b.len() + content::OVERHEAD as usize;
        let dst = out.get_mut(pos..pos + n).ok_or(Errno::EIO)?;
        c.encrypt_block_into(b, first + i as u64, Some(id), dst)
            .map_err(eio("encryption failed"))?;
        pos += n;
    }
    Ok(())
}

/// Writes `data` at plaintext offset `off`. The caller holds the state's lock exclusively.
pub fn write(c: &ContentCipher, inner: &mut Inner, f: &File, off: u64, data: &[u8]) -> Res<()> {
    if data.is_empty() {
        return Ok(());
    }
    if inner.last_write_end != Some(off) {
        pad_hole(c, inner, f, off)?;
    }
    do_write(c, inner, f, off, data)?;
    inner.last_write_end = Some(off + data.len() as u64);
    Ok(())
}

/// A write beyond the next block leaves a hole: the current last block must first be padded to
/// a whole block, or it would be read back as a short block in the middle of the file.
fn pad_hole(c: &ContentCipher, inner: &mut Inner, f: &File, target: u64) -> Res<()> {
    let plain = content::plain_size(size_of(f)?);
    if block_of(target) > block_of(plain) {
        zero_pad(c, inner, f, plain)?;
    }
    Ok(())
}

/// Pads a file of `plain` bytes with zeros to the next block boundary.
fn zero_pad(c: &ContentCipher, inner: &mut Inner, f: &File, plain: u64) -> Res<()> {
    let in_last = plain % PLAIN_BS;
    if in_last == 0 {
        return Ok(());
    }
    let pad = vec![0u8; (PLAIN_BS - in_last) as usize];
    do_write(c, inner, f, plain, &pad)
}

fn new_header(inner: &Inner, f: &File) -> Res<FileId> {
    let id = FileId::random().map_err(|_| Errno::EIO)?;
    f.write_all_at(&id.header(), 0).map_err(|e| io_errno(&e))?;
    *inner.id.lock().map_err(|_| Errno::EIO)? = Some(id);
    Ok(id)
}

fn do_write(c: &ContentCipher, inner: &mut Inner, f: &File, off: u64, data: &[u8]) -> Res<()> {
    let id = match file_id(inner, f)? {
        Some(id) => id,
        None => new_header(inner, f)?,
    };
    let first = block_of(off);
    let last = block_of(off + data.len() as u64 - 1);
    let mut blocks: Vec<Cow<'_, [u8]>> = Vec::with_capacity((last - first + 1) as usize);
    let mut pos = 0usize;
    for b in first..=last {
        let start = if b == first {
            (off % PLAIN_BS) as usize
        } else {
            0
        };
        let take = (PLAIN_BS as usize - start).min(data.len() - pos);
        let piece = &data[pos..pos + take];
        pos += take;
        if start == 0 && take == PLAIN_BS as usize {
            blocks.push(Cow::Borrowed(piece));
            continue;
        }
        // Partial block: read-modify-write.
        let mut old = read(c, inner, f, b * PLAIN_BS, PLAIN_BS)?;
        let end = start + take;
        if old.len() < end {
            old.resize(end, 0);
        }
        old[start..end].copy_from_slice(piece);
        blocks.push(Cow::Owned(old));
    }
    let total: usize = blocks
        .iter()
        .map(|b| b.len() + content::OVERHEAD as usize)
        .sum();
    CIPHER_BUF.with_borrow_mut(|out| {
        out.resize(total, 0);
        let half = blocks.len() / 2;
        let (ba, bb) = blocks.split_at(half);
        let (oa, ob) = out.split_at_mut(half * CIPHER_BS as usize);
        maybe_parallel(
            blocks.len(),
            || encrypt_run(c, ba, first, &id, oa),
            || encrypt_run(c, bb, first + half as u64, &id, ob),
        )?;
        f.write_all_at(out, block_cipher_off(first))
            .map_err(|e| io_errno(&e))
    })
}

/// Sets the plaintext size of the file. The caller holds the state's lock exclusively.
pub fn truncate(c: &ContentCipher, inner: &mut Inner, f: &File, new: u64) -> Res<()> {
    inner.last_write_end = None;
    if new == 0 {
        rustix::fs::ftruncate(f, 0).map_err(errno)?;
        *inner.id.lock().map_err(|_| Errno::EIO)? = None;
        return Ok(());
    }
    let old = content::plain_size(size_of(f)?);
    if new == old {
        return Ok(());
    }
    if new > old {
        return grow(c, inner, f, old, new);
    }
    // Shrink: keep the part of the new last block, cut at its start, write it back.
    let block = block_of(new);
    let keep = new - block * PLAIN_BS;
    let data = if keep > 0 {
        read(c, inner, f, block * PLAIN_BS, keep)?
    } else {
        Vec::new()
    };
    rustix::fs::ftruncate(f, block_cipher_off(block)).map_err(errno)?;
    if keep > 0 {
        do_write(c, inner, f, block * PLAIN_BS, &data)?;
    }
    Ok(())
}

/// Grows a file from `old` to `new` plaintext bytes: whole new blocks become holes.
fn grow(c: &ContentCipher, inner: &mut Inner, f: &File, old: u64, new: u64) -> Res<()> {
    if old > 0 && block_of(old - 1) == block_of(new - 1) {
        return do_write(c, inner, f, new - 1, &[0]);
    }
    zero_pad(c, inner, f, old)?;
    if new.is_multiple_of(PLAIN_BS) {
        if old == 0 {
            new_header(inner, f)?;
        }
        return rustix::fs::ftruncate(f, content::cipher_size(new)).map_err(errno);
    }
    do_write(c, inner, f, new - 1, &[0])
}

/// `fallocate` modes 0 and `FALLOC_FL_KEEP_SIZE` (as gocryptfs; hole punching is refused).
pub fn allocate(
    c: &ContentCipher,
    inner: &mut Inner,
    f: &File,
    off: u64,
    len: u64,
    keep_size: bool,
) -> Res<()> {
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    let first = block_of(off);
    let last = block_of(off + len - 1);
    let c_off = block_cipher_off(first);
    let c_len = block_cipher_off(last + 1) - c_off;
    rustix::fs::fallocate(f, rustix::fs::FallocateFlags::KEEP_SIZE, c_off, c_len).map_err(errno)?;
    if keep_size {
        return Ok(());
    }
    let old = content::plain_size(size_of(f)?);
    if off + len <= old {
        return Ok(());
    }
    inner.last_write_end = None;
    grow(c, inner, f, old, off + len)
}
