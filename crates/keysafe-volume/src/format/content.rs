//! File contents in gocryptfs's format: an 18-byte header (format version 2, big endian, and a
//! random 16-byte file ID), then blocks of up to 4096 plaintext bytes, each stored as a random
//! 128-bit IV, the AES-256-GCM ciphertext and its 16-byte tag. Each block is authenticated with
//! its block number and the file ID as associated data, so blocks cannot be moved within a file
//! or between files. An empty file has no header. A block of 4128 zero bytes is a hole and
//! reads as 4096 zero bytes (gocryptfs's sparse-file passthrough).
//!
//! This module only does arithmetic and crypto; it never touches a file.

use super::FormatError;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::aead::consts::U16;
use aes_gcm::{AesGcm, KeyInit};

/// Plaintext bytes per block.
pub const PLAIN_BS: u64 = 4096;
/// Random IV (nonce) length of each block.
pub const IV_LEN: usize = 16;
pub const TAG_LEN: usize = 16;
/// Per-block overhead: IV and tag.
pub const OVERHEAD: u64 = (IV_LEN + TAG_LEN) as u64;
/// Ciphertext bytes of a full block.
pub const CIPHER_BS: u64 = PLAIN_BS + OVERHEAD;
pub const FILE_ID_LEN: usize = 16;
/// Version (2 bytes) and file ID.
pub const HEADER_LEN: u64 = 2 + FILE_ID_LEN as u64;
/// The on-disk format version in every file header and in `gocryptfs.conf`.
pub const FORMAT_VERSION: u16 = 2;

/// The random ID in a file's header, bound into every block of that file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileId(pub [u8; FILE_ID_LEN]);

impl FileId {
    pub fn random() -> Result<Self, FormatError> {
        let mut id = [0u8; FILE_ID_LEN];
        super::random(&mut id)?;
        Ok(Self(id))
    }

    /// The header that starts a non-empty file.
    pub fn header(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        h[..2].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        h[2..].copy_from_slice(&self.0);
        h
    }

    /// Parses a header; an all-zero header or ID, or another version, is corrupt.
    pub fn parse_header(buf: &[u8]) -> Result<Self, FormatError> {
        if buf.len() != HEADER_LEN as usize {
            return Err(FormatError::Corrupt(format!(
                "file header of {} bytes",
                buf.len()
            )));
        }
        let version = u16::from_be_bytes([buf[0], buf[1]]);
        if version != FORMAT_VERSION {
            return Err(FormatError::Corrupt(format!(
                "file header version {version}, expected {FORMAT_VERSION}"
            )));
        }
        let mut id = [0u8; FILE_ID_LEN];
        id.copy_from_slice(&buf[2..]);
        if id.iter().all(|&b| b == 0) {
            return Err(FormatError::Corrupt("all-zero file ID".into()));
        }
        Ok(Self(id))
    }
}

type Gcm = AesGcm<aes::Aes256, U16>;

/// AES-256-GCM with 128-bit IVs, as gocryptfs uses for contents, symlink targets, xattr values
/// and (keyed from the password) the master key in `gocryptfs.conf`.
pub struct ContentCipher {
    gcm: Gcm,
}

impl std::fmt::Debug for ContentCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentCipher([redacted])")
    }
}

/// Associated data of a block: the block number (big endian), then the file ID when there is
/// one (symlink targets, xattr values and the master key have none).
fn associated_data(block_no: u64, file_id: Option<&FileId>) -> ([u8; 8 + FILE_ID_LEN], usize) {
    let mut ad = [0u8; 8 + FILE_ID_LEN];
    ad[..8].copy_from_slice(&block_no.to_be_bytes());
    match file_id {
        Some(id) => {
            ad[8..].copy_from_slice(&id.0);
            (ad, 8 + FILE_ID_LEN)
        }
        None => (ad, 8),
    }
}

impl ContentCipher {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            gcm: Gcm::new(&(*key).into()),
        }
    }

    /// Appends IV, ciphertext and tag of `plain` (at most one block) to `out`. An empty
    /// plaintext appends nothing.
    pub fn encrypt_block(
        &self,
        plain: &[u8],
        block_no: u64,
        file_id: Option<&FileId>,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        if plain.is_empty() {
            return Ok(());
        }
        let mut iv = [0u8; IV_LEN];
        super::random(&mut iv)?;
        let start = out.len();
        out.extend_from_slice(&iv);
        out.extend_from_slice(plain);
        let (ad, ad_len) = associated_data(block_no, file_id);
        let tag = self
            .gcm
            .encrypt_in_place_detached(&iv.into(), &ad[..ad_len], &mut out[start + IV_LEN..])
            .map_err(|_| FormatError::Crypto("AES-GCM encryption failed".into()))?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Decrypts one stored block and appends its plaintext to `out`. An empty block is empty;
    /// a full-size all-zero block is a hole (zeros).
    pub fn decrypt_block(
        &self,
        block: &[u8],
        block_no: u64,
        file_id: Option<&FileId>,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        if block.is_empty() {
            return Ok(());
        }
        if block.len() as u64 == CIPHER_BS && block.iter().all(|&b| b == 0) {
            out.resize(out.len() + PLAIN_BS as usize, 0);
            return Ok(());
        }
        if block.len() < IV_LEN + TAG_LEN + 1 {
            return Err(FormatError::Corrupt(format!(
                "block {block_no} is too short ({} bytes)",
                block.len()
            )));
        }
        let (iv_bytes, rest) = block.split_at(IV_LEN);
        if iv_bytes.iter().all(|&b| b == 0) {
            return Err(FormatError::Corrupt(format!(
                "block {block_no} has an all-zero IV"
            )));
        }
        let (ct, tag_bytes) = rest.split_at(rest.len() - TAG_LEN);
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(iv_bytes);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(tag_bytes);
        let start = out.len();
        out.extend_from_slice(ct);
        let (ad, ad_len) = associated_data(block_no, file_id);
        let r = self.gcm.decrypt_in_place_detached(
            &iv.into(),
            &ad[..ad_len],
            &mut out[start..],
            &tag.into(),
        );
        if r.is_err() {
            out.truncate(start);
            return Err(FormatError::Authentication(format!("block {block_no}")));
        }
        Ok(())
    }

    /// Encrypts one block into `dst`, which must be exactly `plain.len() + OVERHEAD` long: IV,
    /// ciphertext, tag (the layout on disk), with no intermediate buffer.
    pub fn encrypt_block_into(
        &self,
        plain: &[u8],
        block_no: u64,
        file_id: Option<&FileId>,
        dst: &mut [u8],
    ) -> Result<(), FormatError> {
        if dst.len() != plain.len() + OVERHEAD as usize || plain.is_empty() {
            return Err(FormatError::Crypto("bad block buffer".into()));
        }
        let mut iv = [0u8; IV_LEN];
        super::random(&mut iv)?;
        let (head, rest) = dst.split_at_mut(IV_LEN);
        head.copy_from_slice(&iv);
        let (body, tag_out) = rest.split_at_mut(plain.len());
        body.copy_from_slice(plain);
        let (ad, ad_len) = associated_data(block_no, file_id);
        let tag = self
            .gcm
            .encrypt_in_place_detached(&iv.into(), &ad[..ad_len], body)
            .map_err(|_| FormatError::Crypto("AES-GCM encryption failed".into()))?;
        tag_out.copy_from_slice(&tag);
        Ok(())
    }

    /// Decrypts one stored block into the front of `dst` (at least `block.len() - OVERHEAD`
    /// long, or a whole block for a hole) and returns the plaintext length.
    pub fn decrypt_block_into(
        &self,
        block: &[u8],
        block_no: u64,
        file_id: Option<&FileId>,
        dst: &mut [u8],
    ) -> Result<usize, FormatError> {
        if block.is_empty() {
            return Ok(0);
        }
        if block.len() as u64 == CIPHER_BS && block.iter().all(|&b| b == 0) {
            let n = PLAIN_BS as usize;
            dst.get_mut(..n)
                .ok_or_else(|| FormatError::Crypto("bad block buffer".into()))?
                .fill(0);
            return Ok(n);
        }
        if block.len() < IV_LEN + TAG_LEN + 1 {
            return Err(FormatError::Corrupt(format!(
                "block {block_no} is too short ({} bytes)",
                block.len()
            )));
        }
        let (iv_bytes, rest) = block.split_at(IV_LEN);
        if iv_bytes.iter().all(|&b| b == 0) {
            return Err(FormatError::Corrupt(format!(
                "block {block_no} has an all-zero IV"
            )));
        }
        let (ct, tag_bytes) = rest.split_at(rest.len() - TAG_LEN);
        let out = dst
            .get_mut(..ct.len())
            .ok_or_else(|| FormatError::Crypto("bad block buffer".into()))?;
        out.copy_from_slice(ct);
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(iv_bytes);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(tag_bytes);
        let (ad, ad_len) = associated_data(block_no, file_id);
        self.gcm
            .decrypt_in_place_detached(&iv.into(), &ad[..ad_len], out, &tag.into())
            .map_err(|_| {
                out.fill(0);
                FormatError::Authentication(format!("block {block_no}"))
            })?;
        Ok(ct.len())
    }

    /// Encrypts a small value that is not part of a file (symlink target, xattr value): one
    /// block numbered 0 without a file ID.
    pub fn seal_value(&self, plain: &[u8]) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD as usize);
        self.encrypt_block(plain, 0, None, &mut out)?;
        Ok(out)
    }

    pub fn open_value(&self, sealed: &[u8]) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(sealed.len());
        self.decrypt_block(sealed, 0, None, &mut out)?;
        Ok(out)
    }
}

/// The block holding plaintext offset `off`.
pub fn block_of(off: u64) -> u64 {
    off / PLAIN_BS
}

/// Where block `block_no` starts in the ciphertext file.
pub fn block_cipher_off(block_no: u64) -> u64 {
    HEADER_LEN + block_no * CIPHER_BS
}

/// The plaintext size of a ciphertext file of `cipher_size` bytes (gocryptfs's
/// `CipherSizeToPlainSize`, including its tolerance for a truncated last block).
pub fn plain_size(cipher_size: u64) -> u64 {
    if cipher_size <= HEADER_LEN {
        return 0;
    }
    let mut cipher_size = cipher_size;
    let last = (cipher_size - HEADER_LEN) % CIPHER_BS;
    if last > 0 && last <= OVERHEAD {
        cipher_size = cipher_size - last + OVERHEAD + 1;
    }
    let blocks = (cipher_size - HEADER_LEN - 1) / CIPHER_BS + 1;
    let overhead = blocks * OVERHEAD + HEADER_LEN;
    cipher_size.saturating_sub(overhead)
}

/// The ciphertext size of a file of `plain` bytes.
pub fn cipher_size(plain: u64) -> u64 {
    if plain == 0 {
        return 0;
    }
    let last = plain - 1;
    block_cipher_off(block_of(last)) + last % PLAIN_BS + OVERHEAD + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_documented_examples() {
        // Documentation/file-format.md: a 1-byte file is 51 bytes, a 5000-byte file 5082.
        assert_eq!(cipher_size(0), 0);
        assert_eq!(cipher_size(1), 51);
        assert_eq!(cipher_size(5000), 5082);
        assert_eq!(cipher_size(4096), 18 + 4128);
        for p in [
            0u64,
            1,
            4095,
            4096,
            4097,
            8192,
            5000,
            1 << 30,
            (1 << 30) + 17,
        ] {
            assert_eq!(plain_size(cipher_size(p)), p, "plain size {p}");
        }
        // A header alone is an empty file; a truncated block counts as one byte.
        assert_eq!(plain_size(18), 0);
        assert_eq!(plain_size(18 + 10), 1);
    }

    #[test]
    fn blocks_are_bound_to_their_number_and_file() {
        let c = ContentCipher::new(&[9u8; 32]);
        let id = FileId::random().unwrap();
        let mut blk = Vec::new();
        c.encrypt_block(b"hello", 3, Some(&id), &mut blk).unwrap();
        assert_eq!(blk.len(), 5 + OVERHEAD as usize);
        let mut out = Vec::new();
        c.decrypt_block(&blk, 3, Some(&id), &mut out).unwrap();
        assert_eq!(out, b"hello");
        assert!(c.decrypt_block(&blk, 4, Some(&id), &mut out).is_err());
        let other = FileId::random().unwrap();
        assert!(c.decrypt_block(&blk, 3, Some(&other), &mut out).is_err());
        let mut flipped = blk.clone();
        flipped[20] ^= 1;
        assert!(c.decrypt_block(&flipped, 3, Some(&id), &mut out).is_err());
        assert_eq!(out, b"hello", "a failed block appends nothing");
        // The in-place forms agree with the appending ones.
        let mut dst = vec![0u8; 5 + OVERHEAD as usize];
        c.encrypt_block_into(b"world", 7, Some(&id), &mut dst)
            .unwrap();
        let mut back = [0u8; 16];
        assert_eq!(
            c.decrypt_block_into(&dst, 7, Some(&id), &mut back).unwrap(),
            5
        );
        assert_eq!(&back[..5], b"world");
        assert!(c.decrypt_block_into(&dst, 8, Some(&id), &mut back).is_err());
        let mut out2 = Vec::new();
        c.decrypt_block(&dst, 7, Some(&id), &mut out2).unwrap();
        assert_eq!(out2, b"world");
        // A hole.
        let mut zeros = Vec::new();
        c.decrypt_block(&[0u8; CIPHER_BS as usize], 0, Some(&id), &mut zeros)
            .unwrap();
        assert_eq!(zeros, vec![0u8; PLAIN_BS as usize]);
    }

    #[test]
    fn headers_parse_and_reject_garbage() {
        let id = FileId::random().unwrap();
        assert_eq!(FileId::parse_header(&id.header()).unwrap(), id);
        assert!(FileId::parse_header(&[0u8; 18]).is_err());
        let mut h = id.header();
        h[1] = 1;
        assert!(FileId::parse_header(&h).is_err());
        assert!(FileId::parse_header(&h[..17]).is_err());
    }
}
