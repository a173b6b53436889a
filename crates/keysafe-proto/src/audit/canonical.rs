//! The canonical encoding of an audit entry, and its hash: what every entry of the chain is
//! hashed over. The audit writer hashes every request, so the JSON is written by hand rather
//! than through serde; it is byte for byte what serde_json writes for [`CanonicalEntry`], the
//! encoding existing chains were hashed with (docs/audit.md), and the tests below check that.

use super::{AuditEvent, ENTRY_DOMAIN};
use serde::Serialize;

/// The hashed form: every field of the entry except `hash`, with keys in sorted order (serde
/// writes struct fields in declaration order, so they are declared sorted here). The reference
/// for [`write_canonical_entry`], which writes the same bytes without serde (a test compares
/// them).
#[derive(Serialize)]
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the tests' reference for write_canonical_entry")
)]
struct CanonicalEntry<'a> {
    client: &'a Option<String>,
    node: &'a str,
    operation: &'a str,
    org: &'a Option<String>,
    outcome: &'a str,
    prev_hash: &'a str,
    remote: &'a str,
    request_id: &'a str,
    seq: u64,
    target: &'a str,
    time: i64,
    version: Option<u64>,
}

/// The canonical encoding of an entry: compact JSON (no whitespace), keys sorted, strings as
/// serde_json writes them (UTF-8, only `"`, `\` and control characters escaped), `null` for
/// absent values. Equal to Python's
/// `json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
pub fn canonical_entry(seq: u64, prev_hash: &str, e: &AuditEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(canonical_entry_len_hint(prev_hash, e));
    write_canonical_entry(&mut out, seq, prev_hash, e);
    out
}

/// At least the length of an entry's canonical encoding unless a string needs escaping: the
/// keys and punctuation, the strings (`null` for absent ones), and 20 bytes for each number.
fn canonical_entry_len_hint(prev_hash: &str, e: &AuditEvent) -> usize {
    const FIXED: usize = concat!(
        r#"{"client":"","node":"","operation":"","org":"","outcome":"","prev_hash":"","#,
        r#""remote":"","request_id":"","seq":,"target":"","time":,"version":}"#
    )
    .len();
    FIXED
        + e.client.as_ref().map_or(4, String::len)
        + e.node.len()
        + e.operation.len()
        + e.org.as_ref().map_or(4, String::len)
        + e.outcome.len()
        + prev_hash.len()
        + e.remote.len()
        + e.request_id.len()
        + e.target.len()
        + 3 * 20
}

/// Appends the canonical encoding of an entry to `out`: byte for byte what
/// `serde_json::to_writer` writes for [`CanonicalEntry`] (a test compares the two over every
/// ASCII character, multi-byte characters, the integer extremes and random entries), written
/// by hand because serde_json's generic serialiser showed in the profile of the audit writer
/// thread, which hashes every request.
fn write_canonical_entry(out: &mut Vec<u8>, seq: u64, prev_hash: &str, e: &AuditEvent) {
    let mut int = itoa::Buffer::new();
    out.extend_from_slice(br#"{"client":"#);
    write_json_opt_str(out, e.client.as_deref());
    out.extend_from_slice(br#","node":"#);
    write_json_str(out, &e.node);
    out.extend_from_slice(br#","operation":"#);
    write_json_str(out, &e.operation);
    out.extend_from_slice(br#","org":"#);
    write_json_opt_str(out, e.org.as_deref());
    out.extend_from_slice(br#","outcome":"#);
    write_json_str(out, &e.outcome);
    out.extend_from_slice(br#","prev_hash":"#);
    write_json_str(out, prev_hash);
    out.extend_from_slice(br#","remote":"#);
    write_json_str(out, &e.remote);
    out.extend_from_slice(br#","request_id":"#);
    write_json_str(out, &e.request_id);
    out.extend_from_slice(br#","seq":"#);
    out.extend_from_slice(int.format(seq).as_bytes());
    out.extend_from_slice(br#","target":"#);
    write_json_str(out, &e.target);
    out.extend_from_slice(br#","time":"#);
    out.extend_from_slice(int.format(e.time).as_bytes());
    out.extend_from_slice(br#","version":"#);
    match e.version {
        Some(v) => out.extend_from_slice(int.format(v).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// A JSON string, or `null` for `None`.
fn write_json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Byte `b` is written as `\x` where `x = JSON_ESCAPE[b]`, or as itself where that is 0:
/// serde_json's `ESCAPE` table (`"`, `\` and the bytes below 0x20; `u` means `\u00XX`, lowercase
/// hex). DEL and every byte of a multi-byte character go through unchanged.
static JSON_ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// A JSON string as serde_json writes it: quoted, with the bytes [`JSON_ESCAPE`] names escaped
/// and each run of the others copied at once.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.push(b'"');
    // Most strings need no escape: find that out with a branch-free pass the compiler
    // vectorises (about half the cost of the byte-by-byte loop below on a typical entry), and
    // copy them whole.
    if !bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    }) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = JSON_ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        if escape == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// `hex(SHA-256(ENTRY_DOMAIN || canonical_entry))`.
pub fn entry_hash(seq: u64, prev_hash: &str, e: &AuditEvent) -> String {
    // One buffer, sized for the entry, and one digest call.
    let mut input = Vec::with_capacity(ENTRY_DOMAIN.len() + canonical_entry_len_hint(prev_hash, e));
    input.extend_from_slice(ENTRY_DOMAIN);
    write_canonical_entry(&mut input, seq, prev_hash, e);
    crate::lower_hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input).as_ref())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::GENESIS_HASH;
    use crate::audit::tests::event;

    #[test]
    fn canonical_json_has_sorted_keys() {
        let bytes = canonical_entry(3, GENESIS_HASH, &event(1));
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        let keys: Vec<_> = v.keys().cloned().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 12);
        // Compact: no whitespace between tokens (the only spaces are inside string values).
        assert!(
            !bytes
                .windows(2)
                .any(|w| w == b", " || w == b": " || w == b"{ ")
        );
        assert!(bytes.starts_with(b"{\"client\":\"ab\",\"node\":\"n1\","));
    }

    /// Checks the hand-written encoding (and the hash over it) against serde_json's serialisation
    /// of [`CanonicalEntry`], the encoding existing chains were hashed with.
    fn assert_same_as_serde_json(seq: u64, prev_hash: &str, e: &AuditEvent) {
        let reference = serde_json::to_vec(&CanonicalEntry {
            client: &e.client,
            node: &e.node,
            operation: &e.operation,
            org: &e.org,
            outcome: &e.outcome,
            prev_hash,
            remote: &e.remote,
            request_id: &e.request_id,
            seq,
            target: &e.target,
            time: e.time,
            version: e.version,
        })
        .unwrap();
        let ours = canonical_entry(seq, prev_hash, e);
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(reference.clone()).unwrap(),
            "seq {seq}, prev_hash {prev_hash:?}, {e:?}"
        );
        let mut input = ENTRY_DOMAIN.to_vec();
        input.extend_from_slice(&reference);
        assert_eq!(
            entry_hash(seq, prev_hash, e),
            hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input).as_ref())
        );
    }

    /// Sets string field `i` (of 9: the event's seven strings, its two optional strings, and
    /// the prev_hash beside it) to `s`.
    fn set_string(e: &mut AuditEvent, prev_hash: &mut String, i: usize, s: String) {
        match i {
            0 => e.node = s,
            1 => e.request_id = s,
            2 => e.remote = s,
            3 => e.operation = s,
            4 => e.target = s,
            5 => e.outcome = s,
            6 => e.client = Some(s),
            7 => e.org = Some(s),
            _ => *prev_hash = s,
        }
    }

    const STRING_FIELDS: usize = 9;

    #[test]
    fn canonical_json_escapes_every_character_as_serde_json_does() {
        let chars = (0u8..=0x7f).map(char::from).chain([
            'é',
            '中',
            '😀',
            '\u{2028}',
            '\u{2029}',
            '\u{80}',
            '\u{feff}',
            '\u{10ffff}',
        ]);
        for c in chars {
            for s in [
                c.to_string(),
                format!("a{c}"),
                format!("{c}b"),
                format!("x{c}y{c}{c}z"),
            ] {
                for field in 0..STRING_FIELDS {
                    let mut e = event(7);
                    let mut prev = GENESIS_HASH.to_owned();
                    set_string(&mut e, &mut prev, field, s.clone());
                    assert_same_as_serde_json(7, &prev, &e);
                }
            }
        }
        // Empty strings everywhere.
        assert_same_as_serde_json(
            1,
            "",
            &AuditEvent {
                client: Some(String::new()),
                org: Some(String::new()),
                ..AuditEvent::default()
            },
        );
        assert_same_as_serde_json(0, "", &AuditEvent::default());
    }

    #[test]
    fn canonical_json_writes_absent_values_and_integers_as_serde_json_does() {
        for seq in [0, 1, u64::MAX] {
            for time in [i64::MIN, -1, 0, i64::MAX] {
                for version in [None, Some(0), Some(u64::MAX)] {
                    for client in [None, Some("ab".to_owned())] {
                        for org in [None, Some("acme".to_owned())] {
                            let e = AuditEvent {
                                time,
                                version,
                                client: client.clone(),
                                org: org.clone(),
                                ..event(1)
                            };
                            assert_same_as_serde_json(seq, GENESIS_HASH, &e);
                            // Nothing to escape: the buffer was sized for the whole entry.
                            let bytes = canonical_entry(seq, GENESIS_HASH, &e);
                            assert!(bytes.len() <= canonical_entry_len_hint(GENESIS_HASH, &e));
                        }
                    }
                }
            }
        }
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// A string of up to 24 characters, mostly plain ASCII with control characters,
        /// quotes, backslashes, DEL and multi-byte characters mixed in.
        fn string(&mut self) -> String {
            const SPECIAL: &[char] = &[
                '"',
                '\\',
                '/',
                '\u{7f}',
                '\u{0}',
                '\u{8}',
                '\u{c}',
                '\n',
                '\r',
                '\t',
                '\u{1f}',
                'é',
                '中',
                '😀',
                '\u{2028}',
                '\u{80}',
                '\u{10ffff}',
            ];
            let len = self.below(25);
            (0..len)
                .map(|_| match self.below(8) {
                    // Printable ASCII.
                    0..=3 => char::from(0x20 + self.below(0x5f) as u8),
                    // Any control character.
                    4 => char::from(self.below(0x20) as u8),
                    _ => SPECIAL[self.below(SPECIAL.len() as u64) as usize],
                })
                .collect()
        }

        fn int(&mut self) -> u64 {
            match self.below(3) {
                0 => self.below(1000),
                1 => self.next() >> self.below(64),
                _ => self.next(),
            }
        }
    }

    #[test]
    fn canonical_json_of_random_entries_is_serde_json_s() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let mut e = AuditEvent {
                time: rng.int() as i64,
                version: (rng.below(2) == 0).then(|| rng.int()),
                ..AuditEvent::default()
            };
            let mut prev = String::new();
            for field in 0..STRING_FIELDS {
                let s = rng.string();
                set_string(&mut e, &mut prev, field, s);
            }
            if rng.below(3) == 0 {
                e.client = None;
            }
            if rng.below(3) == 0 {
                e.org = None;
            }
            assert_same_as_serde_json(rng.int(), &prev, &e);
        }
    }
}
