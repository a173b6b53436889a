//! Validators for conditional reads of a deposit version. A [`ContentTag`] names exactly the
//! bytes (and the headers) a GET of one version serves: it changes whenever they change, so a
//! client that holds a copy can ask "still this?" and be answered without the payload. It never
//! names anything secret: it is a hash of the owner, name, version, ACL serial, encoding and the
//! server-side sealed ciphertext, which is itself random-looking (a fresh data key and nonce per
//! sealing).

use keysafe_proto::api::Encoding;
use keysafe_proto::{DepositName, DepositVersion, Principal};
use std::sync::Arc;

/// A strong entity tag of one deposit version as served: `VERSION-HASH`, where HASH is 128 bits
/// of SHA-256 in hex. The version comes first so that a person reading it sees the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentTag(Arc<str>);

impl ContentTag {
    /// The tag of a version as served. `sealed` is the stored (server-side encrypted) payload:
    /// re-encrypting a version (an ACL change) seals it again under a new data key, so its tag
    /// changes; re-wrapping the data key (keyring rotation) does not touch it, and neither does
    /// the tag.
    pub fn compute(
        owner: &Principal,
        name: &DepositName,
        version: DepositVersion,
        acl_serial: u64,
        encoding: Encoding,
        sealed: &[u8],
    ) -> Self {
        // One buffer and one digest call: each part is its length (eight bytes, big-endian)
        // and its bytes.
        let owner = owner.stored_str();
        let parts: [&[u8]; 7] = [
            b"keysafe deposit etag v1",
            owner.as_bytes(),
            name.as_str().as_bytes(),
            &version.get().to_be_bytes(),
            &acl_serial.to_be_bytes(),
            encoding.as_str().as_bytes(),
            sealed,
        ];
        let mut input = Vec::with_capacity(parts.iter().map(|p| 8 + p.len()).sum());
        for p in parts {
            input.extend_from_slice(&(p.len() as u64).to_be_bytes());
            input.extend_from_slice(p);
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
        let mut tag = version.get().to_string();
        tag.push('-');
        tag.push_str(&keysafe_proto::lower_hex(&digest.as_ref()[..16]));
        Self(tag.into())
    }

    /// The tag without quotes.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag's text, shared (to keep with the row it names).
    pub(crate) fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// A tag computed earlier from the same row, as [`ContentTag::shared`] gave it.
    pub(crate) fn from_shared(tag: Arc<str>) -> Self {
        Self(tag)
    }
}

impl std::fmt::Display for ContentTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a conditional read already holds (HTTP `If-None-Match`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IfNoneMatch {
    /// Unconditional.
    #[default]
    Absent,
    /// `*`: any current representation.
    Any,
    /// These opaque tags (without quotes or `W/`).
    Tags(Vec<String>),
}

impl IfNoneMatch {
    /// Parses the header value: `*`, or a comma-separated list of entity tags, strong
    /// (`"x"`) or weak (`W/"x"`). `If-None-Match` uses weak comparison (RFC 9110 13.1.2), so
    /// the `W/` prefix is dropped. `None` for a malformed value.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if value == "*" {
            return Some(Self::Any);
        }
        let mut tags = Vec::new();
        for item in value.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let item = item.strip_prefix("W/").unwrap_or(item);
            let inner = item.strip_prefix('"')?.strip_suffix('"')?;
            if inner.contains('"') || inner.len() > 128 {
                return None;
            }
            tags.push(inner.to_owned());
        }
        if tags.is_empty() || tags.len() > 32 {
            return None;
        }
        Some(Self::Tags(tags))
    }

    /// Whether a version with this tag counts as unchanged for the caller.
    pub fn matches(&self, tag: &ContentTag) -> bool {
        match self {
            Self::Absent => false,
            Self::Any => true,
            Self::Tags(t) => t.iter().any(|t| t == tag.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn tag(serial: u64, sealed: &[u8]) -> ContentTag {
        ContentTag::compute(
            &Principal::parse_stored("group:acme/kms").unwrap(),
            &DepositName::parse("db/key").unwrap(),
            DepositVersion::new(3).unwrap(),
            serial,
            Encoding::Age,
            sealed,
        )
    }

    #[test]
    fn tags_change_with_the_bytes_and_the_serial_only() {
        let a = tag(1, b"sealed");
        assert_eq!(a, tag(1, b"sealed"));
        assert!(a.as_str().starts_with("3-"));
        assert_eq!(a.as_str().len(), 2 + 32);
        assert_ne!(a, tag(2, b"sealed"));
        assert_ne!(a, tag(1, b"sealeD"));
        // Length-prefixed parts: moving a byte between fields changes the hash.
        let other = ContentTag::compute(
            &Principal::parse_stored("group:acme/kms").unwrap(),
            &DepositName::parse("db/key").unwrap(),
            DepositVersion::new(3).unwrap(),
            1,
            Encoding::Raw,
            b"sealed",
        );
        assert_ne!(a, other);
    }

    #[test]
    fn a_tag_is_the_version_and_a_hash_of_the_length_prefixed_parts() {
        // Computed apart from this code (Python's hashlib over the same parts), so that a
        // change of the computation cannot change the tags clients already hold.
        assert_eq!(
            tag(1, b"sealed").as_str(),
            "3-a3d5831533d1d97431969c8887eb9327"
        );
    }

    #[test]
    fn if_none_match_parsing_and_matching() {
        let t = tag(1, b"x");
        assert_eq!(IfNoneMatch::parse("*"), Some(IfNoneMatch::Any));
        assert!(IfNoneMatch::Any.matches(&t));
        assert!(!IfNoneMatch::Absent.matches(&t));
        let h = format!("\"nope\", W/\"{t}\"");
        assert!(IfNoneMatch::parse(&h).unwrap().matches(&t));
        assert!(
            !IfNoneMatch::parse("\"3\"").unwrap().matches(&t),
            "a bare version is not the tag"
        );
        for bad in ["", "3", "\"a", "a\"", "\"a\"b\"", ","] {
            assert_eq!(IfNoneMatch::parse(bad), None, "{bad:?}");
        }
        let many = vec!["\"a\""; 33].join(",");
        assert_eq!(IfNoneMatch::parse(&many), None);
    }
}
