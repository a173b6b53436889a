//! EME (ECB-Mix-ECB), the wide-block tweakable cipher of Halevi and Rogaway that gocryptfs uses
//! for file names, over AES-256. Our own implementation of the construction as gocryptfs's
//! `github.com/rfjakob/eme` computes it (including its byte order for the doubling in
//! GF(2^128)); the test vectors at the bottom come from that package's tests.
//!
//! EME is deterministic: the same name under the same tweak (the directory IV) always encrypts
//! to the same ciphertext, which is what lets a lookup find a file by encrypting its name.

use aes::Aes256;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

/// The block size of the underlying cipher and the size of the tweak.
pub const BLOCK: usize = 16;
/// EME is defined for 1 to 128 blocks (2048 bytes).
pub const MAX_BLOCKS: usize = 128;

/// EME over AES-256 with one key.
pub struct Eme {
    aes: Aes256,
}

impl std::fmt::Debug for Eme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Eme([redacted])")
    }
}

/// Doubling in GF(2^128), bytes in little-endian order (as the EME-32 draft and rfjakob/eme).
fn mult_by_two(b: &mut [u8; BLOCK]) {
    let carry = b[BLOCK - 1] >= 128;
    let mut prev_high = false;
    for x in b.iter_mut() {
        let high = *x >= 128;
        *x = (*x << 1) | u8::from(prev_high);
        prev_high = high;
    }
    if carry {
        b[0] ^= 135;
    }
}

fn xor_into(out: &mut [u8; BLOCK], other: &[u8]) {
    for (o, i) in out.iter_mut().zip(other) {
        *o ^= i;
    }
}

fn block_of(data: &[u8]) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b.copy_from_slice(&data[..BLOCK]);
    b
}

impl Eme {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            aes: Aes256::new(&(*key).into()),
        }
    }

    fn enc(&self, b: &mut [u8; BLOCK]) {
        let mut ga = (*b).into();
        self.aes.encrypt_block(&mut ga);
        b.copy_from_slice(&ga);
    }

    fn dec(&self, b: &mut [u8; BLOCK]) {
        let mut ga = (*b).into();
        self.aes.decrypt_block(&mut ga);
        b.copy_from_slice(&ga);
    }

    fn transform_block(&self, b: &mut [u8; BLOCK], encrypt: bool) {
        if encrypt { self.enc(b) } else { self.dec(b) }
    }

    pub fn encrypt(&self, tweak: &[u8; BLOCK], data: &[u8]) -> Option<Vec<u8>> {
        self.transform(tweak, data, true)
    }

    pub fn decrypt(&self, tweak: &[u8; BLOCK], data: &[u8]) -> Option<Vec<u8>> {
        self.transform(tweak, data, false)
    }

    /// EME-encrypts or -decrypts `data` (a whole number of blocks, 1 to 128) under `tweak`.
    /// `None` when the length is not allowed.
    fn transform(&self, tweak: &[u8; BLOCK], data: &[u8], encrypt: bool) -> Option<Vec<u8>> {
        if data.is_empty() || !data.len().is_multiple_of(BLOCK) || data.len() / BLOCK > MAX_BLOCKS {
            return None;
        }
        let m = data.len() / BLOCK;
        // L_j = 2^(j+1) * AES-enc(K, 0): always computed with encryption, in both directions.
        let mut l = [0u8; BLOCK];
        self.enc(&mut l);
        let mut table = Vec::with_capacity(m);
        for _ in 0..m {
            mult_by_two(&mut l);
            table.push(l);
        }
        let mut c = vec![0u8; data.len()];
        for j in 0..m {
            let mut ppj = block_of(&data[j * BLOCK..]);
            xor_into(&mut ppj, &table[j]);
            self.transform_block(&mut ppj, encrypt);
            c[j * BLOCK..(j + 1) * BLOCK].copy_from_slice(&ppj);
        }
        let mut mp = block_of(&c);
        xor_into(&mut mp, tweak);
        for j in 1..m {
            xor_into(&mut mp, &c[j * BLOCK..(j + 1) * BLOCK]);
        }
        let mut mc = mp;
        self.transform_block(&mut mc, encrypt);
        let mut mm = mp;
        xor_into(&mut mm, &mc);
        for j in 1..m {
            mult_by_two(&mut mm);
            let chunk = &mut c[j * BLOCK..(j + 1) * BLOCK];
            for (x, y) in chunk.iter_mut().zip(mm.iter()) {
                *x ^= y;
            }
        }
        let mut ccc1 = mc;
        xor_into(&mut ccc1, tweak);
        for j in 1..m {
            xor_into(&mut ccc1, &c[j * BLOCK..(j + 1) * BLOCK]);
        }
        c[..BLOCK].copy_from_slice(&ccc1);
        for j in 0..m {
            let mut b = block_of(&c[j * BLOCK..]);
            self.transform_block(&mut b, encrypt);
            xor_into(&mut b, &table[j]);
            c[j * BLOCK..(j + 1) * BLOCK].copy_from_slice(&b);
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From rfjakob/eme's eme_test.go (TestEnc16): all-zero key, tweak and input.
    #[test]
    fn known_answer_one_block() {
        let eme = Eme::new(&[0u8; 32]);
        let out = eme.encrypt(&[0u8; 16], &[0u8; 16]).unwrap();
        assert_eq!(hex::encode(&out), "f1b9ce8ca15a4ba9fb476905434b9fd3");
        assert_eq!(eme.decrypt(&[0u8; 16], &out).unwrap(), vec![0u8; 16]);
    }

    // The first 40 bytes of rfjakob/eme's TestEnc2048 vector (all zero, 2048 bytes).
    #[test]
    fn known_answer_max_blocks() {
        let eme = Eme::new(&[0u8; 32]);
        let out = eme.encrypt(&[0u8; 16], &[0u8; 2048]).unwrap();
        assert_eq!(
            hex::encode(&out[..39]),
            "630500884158a8d41216aaa6351e92ea7ca540a949e73f1d6069afef372eae226d426d8f4dbbce"
        );
        assert_eq!(eme.decrypt(&[0u8; 16], &out).unwrap(), vec![0u8; 2048]);
    }

    #[test]
    fn round_trips_and_rejects_bad_lengths() {
        let eme = Eme::new(&[7u8; 32]);
        let tweak = [3u8; 16];
        for blocks in [1usize, 2, 3, 16, 17, 128] {
            let data: Vec<u8> = (0..blocks * 16).map(|i| i as u8).collect();
            let c = eme.encrypt(&tweak, &data).unwrap();
            assert_ne!(c, data);
            assert_eq!(eme.decrypt(&tweak, &c).unwrap(), data);
            // Another tweak gives another ciphertext.
            assert_ne!(eme.encrypt(&[4u8; 16], &data).unwrap(), c);
        }
        assert!(eme.encrypt(&tweak, &[]).is_none());
        assert!(eme.encrypt(&tweak, &[0u8; 15]).is_none());
        assert!(eme.encrypt(&tweak, &vec![0u8; 129 * 16]).is_none());
    }
}
