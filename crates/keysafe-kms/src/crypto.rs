//! EEK crypto exactly as Hadoop's `DefaultCryptoExtension`: AES-CTR (128-bit big-endian counter)
//! under the key version's material with the IV's bits flipped; base64 as Hadoop writes and reads it.

use crate::error::{KmsError, KmsResult};
use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

pub const IV_LEN: usize = 16;

/// AES-CTR under `key` with IV `~iv` (every bit flipped). Encryption and decryption are the same.
pub fn eek_transform(key: &[u8], iv: &[u8], data: &[u8]) -> KmsResult<Zeroizing<Vec<u8>>> {
    let iv: [u8; IV_LEN] = iv
        .try_into()
        .map_err(|_| KmsError::illegal(format!("IV must be {IV_LEN} bytes, got {}", iv.len())))?;
    let flipped = iv.map(|b| !b);
    let alg = match key.len() {
        16 => &AES_128,
        24 => &AES_192,
        32 => &AES_256,
        n => {
            return Err(KmsError::io(format!(
                "unsupported key length {} bits for AES/CTR/NoPadding",
                n * 8
            )));
        }
    };
    let ukey = UnboundCipherKey::new(alg, key).map_err(|_| KmsError::io("bad AES key"))?;
    let ek = EncryptingKey::ctr(ukey).map_err(|_| KmsError::io("bad AES key"))?;
    let mut out = Zeroizing::new(data.to_vec());
    ek.less_safe_encrypt(
        &mut out,
        EncryptionContext::Iv128(FixedLength::from(flipped)),
    )
    .map_err(|_| KmsError::io("AES-CTR failed"))?;
    Ok(out)
}

/// Cryptographically secure random bytes.
pub fn random_bytes(n: usize) -> KmsResult<Zeroizing<Vec<u8>>> {
    let mut v = Zeroizing::new(vec![0u8; n]);
    aws_lc_rs::rand::fill(&mut v).map_err(|_| KmsError::io("random generator failed"))?;
    Ok(v)
}

/// URL-safe base64 without padding (commons-codec `encodeBase64URLSafeString`).
pub fn b64_out(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes standard or URL-safe base64, padded or not (commons-codec `decodeBase64`).
pub fn b64_in(s: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let cleaned: String = s
        .trim()
        .trim_end_matches('=')
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    STANDARD_NO_PAD
        .decode(cleaned.as_bytes())
        .map(Zeroizing::new)
        .map_err(|e| format!("invalid base64: {e}"))
}

/// HMAC-SHA256 (the `hadoop.auth` cookie signature).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&k, data).as_ref().to_vec()
}

/// HMAC-SHA1 (the delegation-token password, as `AbstractDelegationTokenSecretManager`).
pub fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    aws_lc_rs::hmac::sign(&k, data).as_ref().to_vec()
}

/// Constant-time comparison.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(start: u8, n: usize) -> Vec<u8> {
        (0..n).map(|i| start + i as u8).collect()
    }

    /// The spec's vectors (§5.4), verified there with Hadoop's own DefaultCryptoExtension.
    #[test]
    fn spec_vectors() {
        let cases = [
            (
                seq(0, 16),
                seq(0x10, 16),
                seq(0x20, 16),
                "1bb233f33fdda7eb4355da74b404fd91",
                "EBESExQVFhcYGRobHB0eHw",
                "G7Iz8z_dp-tDVdp0tAT9kQ",
            ),
            (
                seq(0, 32),
                seq(0x40, 16),
                seq(0x60, 32),
                "dfd3e5ab049d3fd2da53b37f86a405d5dc49b46ae23e01e3149b0d4f1f564b72",
                "QEFCQ0RFRkdISUpLTE1OTw",
                "39PlqwSdP9LaU7N_hqQF1dxJtGriPgHjFJsNTx9WS3I",
            ),
            (
                seq(0, 32),
                vec![0u8; 16],
                seq(0x60, 32),
                "89f8867e28c216bd3bee7b1031e2398182e172c55e3ce9a7d18ae011a15309ff",
                "AAAAAAAAAAAAAAAAAAAAAA",
                "ifiGfijCFr077nsQMeI5gYLhcsVePOmn0YrgEaFTCf8",
            ),
        ];
        for (k, iv, dek, eek_hex, iv_b64, eek_b64) in cases {
            let eek = eek_transform(&k, &iv, &dek).unwrap();
            assert_eq!(hex::encode(&*eek), eek_hex);
            assert_eq!(b64_out(&iv), iv_b64);
            assert_eq!(b64_out(&eek), eek_b64);
            // Decrypting is the same transform.
            assert_eq!(&*eek_transform(&k, &iv, &eek).unwrap(), &dek);
        }
    }

    #[test]
    fn base64_both_alphabets() {
        let want = b64_in("9enO2Onoh+gOqaJVA9Mf9A==").unwrap().to_vec();
        assert_eq!(want.len(), 16);
        assert_eq!(b64_out(&want), "9enO2Onoh-gOqaJVA9Mf9A");
        for s in [
            "9enO2Onoh-gOqaJVA9Mf9A",
            "9enO2Onoh+gOqaJVA9Mf9A==",
            "9enO2Onoh+gOqaJVA9Mf9A",
            "9enO2Onoh-gOqaJVA9Mf9A==",
        ] {
            assert_eq!(&*b64_in(s).unwrap(), &want, "{s}");
        }
        assert!(b64_in("not base64!").is_err());
    }

    #[test]
    fn wrong_iv_length_is_illegal_argument() {
        let e = eek_transform(&seq(0, 16), &[0; 8], &[0; 16]).unwrap_err();
        assert_eq!(e.class, crate::error::JavaClass::IllegalArgument);
        let e = eek_transform(&seq(0, 5), &[0; 16], &[0; 16]).unwrap_err();
        assert_eq!(e.class, crate::error::JavaClass::Io);
    }
}
