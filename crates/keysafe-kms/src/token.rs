//! Hadoop delegation tokens of kind `kms-dt`: the Writable wire format (`Token.encodeToUrlString`)
//! and the identifier of `AbstractDelegationTokenIdentifier`.

use crate::crypto::b64_out;
use base64::Engine;

pub const KIND: &str = "kms-dt";

/// `WritableUtils.writeVLong`.
pub fn write_vlong(out: &mut Vec<u8>, mut i: i64) {
    if (-112..=127).contains(&i) {
        out.push(i as u8);
        return;
    }
    let mut len: i32 = -112;
    if i < 0 {
        i ^= -1;
        len = -120;
    }
    let mut tmp = i;
    while tmp != 0 {
        tmp >>= 8;
        len -= 1;
    }
    out.push(len as u8);
    let len = if len < -120 {
        -(len + 120)
    } else {
        -(len + 112)
    };
    for idx in (1..=len).rev() {
        let shift = (idx - 1) * 8;
        out.push(((i >> shift) & 0xff) as u8);
    }
}

/// `WritableUtils.readVLong`.
pub fn read_vlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let first = *buf.get(*pos)? as i8;
    *pos += 1;
    let len: i32 = if first >= -112 {
        1
    } else if first < -120 {
        -119 - i32::from(first)
    } else {
        -111 - i32::from(first)
    };
    if len == 1 {
        return Some(i64::from(first));
    }
    let mut i: i64 = 0;
    for _ in 0..len - 1 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        i = (i << 8) | i64::from(b);
    }
    let negative = first < -120 || (-112..0).contains(&first);
    Some(if negative { i ^ -1 } else { i })
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_vlong(out, b.len() as i64);
    out.extend_from_slice(b);
}

fn read_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let n = usize::try_from(read_vlong(buf, pos)?).ok()?;
    let end = pos.checked_add(n)?;
    let s = buf.get(*pos..end)?;
    *pos = end;
    Some(s)
}

fn read_text(buf: &[u8], pos: &mut usize) -> Option<String> {
    String::from_utf8(read_bytes(buf, pos)?.to_vec()).ok()
}

/// `AbstractDelegationTokenIdentifier` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdent {
    pub owner: String,
    pub renewer: String,
    pub real_user: String,
    pub issue_date: i64,
    pub max_date: i64,
    pub sequence: i32,
    pub master_key_id: i32,
}

impl TokenIdent {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = vec![0u8];
        write_bytes(&mut o, self.owner.as_bytes());
        write_bytes(&mut o, self.renewer.as_bytes());
        write_bytes(&mut o, self.real_user.as_bytes());
        write_vlong(&mut o, self.issue_date);
        write_vlong(&mut o, self.max_date);
        write_vlong(&mut o, i64::from(self.sequence));
        write_vlong(&mut o, i64::from(self.master_key_id));
        o
    }

    pub fn decode(b: &[u8]) -> Option<TokenIdent> {
        let mut p = 0;
        if *b.first()? != 0 {
            return None;
        }
        p += 1;
        let t = TokenIdent {
            owner: read_text(b, &mut p)?,
            renewer: read_text(b, &mut p)?,
            real_user: read_text(b, &mut p)?,
            issue_date: read_vlong(b, &mut p)?,
            max_date: read_vlong(b, &mut p)?,
            sequence: i32::try_from(read_vlong(b, &mut p)?).ok()?,
            master_key_id: i32::try_from(read_vlong(b, &mut p)?).ok()?,
        };
        (p == b.len()).then_some(t)
    }
}

/// A whole token: identifier, password, kind, service.
#[derive(Debug, Clone)]
pub struct Token {
    pub identifier: Vec<u8>,
    pub password: Vec<u8>,
    pub kind: String,
    pub service: String,
}

impl Token {
    pub fn encode_url_string(&self) -> String {
        let mut o = Vec::new();
        write_bytes(&mut o, &self.identifier);
        write_bytes(&mut o, &self.password);
        write_bytes(&mut o, self.kind.as_bytes());
        write_bytes(&mut o, self.service.as_bytes());
        b64_out(&o)
    }

    pub fn decode_url_string(s: &str) -> Option<Token> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim().trim_end_matches('='))
            .ok()?;
        let mut p = 0;
        let t = Token {
            identifier: read_bytes(&raw, &mut p)?.to_vec(),
            password: read_bytes(&raw, &mut p)?.to_vec(),
            kind: read_text(&raw, &mut p)?,
            service: read_text(&raw, &mut p)?,
        };
        (p == raw.len()).then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlong_matches_hadoop() {
        for (v, hex) in [
            (0i64, "00"),
            (1, "01"),
            (127, "7f"),
            (-112, "90"),
            (128, "8f80"),
            (-113, "8770"),
            (0x01a2_2079_ad87, "8a01a22079ad87"),
        ] {
            let mut o = Vec::new();
            write_vlong(&mut o, v);
            assert_eq!(::hex::encode(&o), hex, "{v}");
            let mut p = 0;
            assert_eq!(read_vlong(&o, &mut p), Some(v));
            assert_eq!(p, o.len());
        }
        for v in [i64::MIN, i64::MAX, -1, 1 << 40, -(1 << 40), 255, 256, 65535] {
            let mut o = Vec::new();
            write_vlong(&mut o, v);
            let mut p = 0;
            assert_eq!(read_vlong(&o, &mut p), Some(v));
        }
    }

    /// The spec's example token (§2.2): decodes to owner root, renewer yarn, seq 1, key 1.
    #[test]
    fn decodes_captured_token() {
        let t = Token::decode_url_string(
            "HAAEcm9vdAR5YXJuAIoBoiB4rH2KAaJEhTB9AQEU3I-1HIayu5Bm0Y-9dnscvgbK74oGa21zLWR0HmttczovL2h0dHBAMTI3LjAuMC4xOjE2MDAwL2ttcw",
        )
        .unwrap();
        assert_eq!(t.kind, KIND);
        assert_eq!(t.service, "kms://http@127.0.0.1:16000/kms");
        assert_eq!(t.password.len(), 20);
        let id = TokenIdent::decode(&t.identifier).unwrap();
        assert_eq!(id.owner, "root");
        assert_eq!(id.renewer, "yarn");
        assert_eq!(id.real_user, "");
        assert_eq!(id.sequence, 1);
        assert_eq!(id.master_key_id, 1);
        assert!(id.max_date > id.issue_date);
        assert_eq!(id.encode(), t.identifier, "re-encodes byte for byte");
        let again = Token::decode_url_string(&t.encode_url_string()).unwrap();
        assert_eq!(again.identifier, t.identifier);
        assert!(Token::decode_url_string("garbage!").is_none());
        assert!(TokenIdent::decode(&t.identifier[..5]).is_none());
    }
}
