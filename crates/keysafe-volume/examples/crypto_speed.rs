//! Throughput of the block cipher on this machine (not a test): AES-256-GCM with 128-bit IVs
//! over 4 KiB blocks, both ways. `cargo run --release -p keysafe-volume --example crypto_speed`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use keysafe_volume::format::content::{CIPHER_BS, ContentCipher, FileId, OVERHEAD, PLAIN_BS};

fn main() {
    let c = ContentCipher::new(&[7u8; 32]);
    let id = FileId::random().unwrap();
    let plain = vec![0x5au8; PLAIN_BS as usize];
    let mut block = vec![0u8; PLAIN_BS as usize + OVERHEAD as usize];
    let n = 64 * 1024; // 256 MiB
    let t = std::time::Instant::now();
    for i in 0..n {
        c.encrypt_block_into(&plain, i, Some(&id), &mut block)
            .unwrap();
    }
    let enc = t.elapsed();
    let mut out = vec![0u8; PLAIN_BS as usize];
    let t = std::time::Instant::now();
    for _ in 0..n {
        c.decrypt_block_into(&block[..CIPHER_BS as usize], n - 1, Some(&id), &mut out)
            .unwrap();
    }
    let dec = t.elapsed();
    let mib = (n * PLAIN_BS) as f64 / (1 << 20) as f64;
    println!(
        "encrypt {:.0} MiB/s, decrypt {:.0} MiB/s (one thread)",
        mib / enc.as_secs_f64(),
        mib / dec.as_secs_f64()
    );
}
