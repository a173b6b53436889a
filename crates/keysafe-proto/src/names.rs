//! Validated names and numbers. Parsing is the only way to build one, so a value of these types
//! always satisfies its rule; handlers and the store never re-check.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused. The message states the rule, so a user can fix the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(String);

impl NameError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

/// The naming rule for deposits, quoted in every refusal.
pub const DEPOSIT_NAME_RULE: &str = "a deposit name is 1-256 characters of A-Z a-z 0-9 . _ / -, \
     made of '/'-separated segments that are neither empty nor '.' nor '..'";

/// The name of a deposit, unique per owning client.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DepositName(String);

impl DepositName {
    pub const MAX_LEN: usize = 256;

    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(NameError(format!(
                "invalid deposit name (length {}): {DEPOSIT_NAME_RULE}",
                s.len()
            )));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
        {
            return Err(NameError(format!(
                "invalid deposit name: character {c:?} is not allowed; {DEPOSIT_NAME_RULE}"
            )));
        }
        if s.split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(NameError(format!(
                "invalid deposit name {s:?}: {DEPOSIT_NAME_RULE}"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// Checks a listing prefix: any leading part of a valid name (it may end in '/', or be empty).
    pub fn validate_prefix(p: &str) -> Result<(), NameError> {
        if p.len() > Self::MAX_LEN {
            return Err(NameError(format!(
                "invalid prefix (length {}): {DEPOSIT_NAME_RULE}",
                p.len()
            )));
        }
        if let Some(c) = p
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
        {
            return Err(NameError(format!(
                "invalid prefix: character {c:?} is not allowed; {DEPOSIT_NAME_RULE}"
            )));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DepositName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DepositName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The rule for organisation names.
pub const ORG_NAME_RULE: &str = "an organisation name is 1-64 characters of a-z A-Z 0-9 . _ -, \
     starting with a letter or digit";

/// The name of an organisation (a tenant).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct OrgName(String);

impl OrgName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError(format!(
                "invalid organisation name {s:?}: {ORG_NAME_RULE}"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OrgName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A human label for a client (host name, service name). Informational only: identity is the
/// fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientName(String);

impl ClientName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.chars().count() > 128 || s.chars().any(|c| c.is_control()) {
            return Err(NameError(format!(
                "invalid client name {s:?}: 1-128 printable characters"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClientName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A deposit version: 1 for the first put, then one more for each put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DepositVersion(u64);

impl DepositVersion {
    pub const FIRST: DepositVersion = DepositVersion(1);
    /// The largest version the stores can hold (they use signed 64-bit integers).
    pub const MAX: u64 = i64::MAX as u64;

    pub fn new(v: u64) -> Result<Self, NameError> {
        if v == 0 || v > Self::MAX {
            Err(NameError(format!(
                "invalid version {v}: versions start at 1"
            )))
        } else {
            Ok(Self(v))
        }
    }

    /// The canonical decimal form only: digits, no sign, no leading zero, no spaces.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bad = || {
            NameError(format!(
                "invalid version {:?}: expected a positive integer such as 3",
                s.chars().take(40).collect::<String>()
            ))
        };
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
            return Err(bad());
        }
        let v: u64 = s.parse().map_err(|_| bad())?;
        Self::new(v)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1).min(Self::MAX))
    }
}

impl fmt::Display for DepositVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for DepositVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        Self::new(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deposit_names_accepted() {
        for ok in [
            "a",
            "db/master-key",
            "A.b_c-d/0",
            "x/.hidden",
            &"a".repeat(256),
        ] {
            assert!(DepositName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn deposit_names_refused_with_rule() {
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "..",
            ".",
            "a/./b",
            "sp ace",
            "ü",
            "a:b",
            "a\\b",
            "a%2fb",
            &"a".repeat(257),
        ] {
            let err = DepositName::parse(bad).unwrap_err();
            assert!(err.message().contains("1-256 characters"), "{bad}: {err}");
        }
    }

    #[test]
    fn org_names() {
        assert!(OrgName::parse("acme").is_ok());
        assert!(OrgName::parse("Acme-1.x_y").is_ok());
        for bad in ["", "-acme", "a b", "a/b", &"a".repeat(65)] {
            assert!(OrgName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert!(DepositVersion::parse("0").is_err());
        assert!(DepositVersion::parse("-1").is_err());
        assert!(DepositVersion::parse("x").is_err());
        assert_eq!(DepositVersion::parse("7").unwrap().get(), 7);
        for bad in ["+1", "01", " 1", "1 ", "", "1_0", "99999999999999999999"] {
            assert!(DepositVersion::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(DepositVersion::FIRST.next().get(), 2);
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<DepositName>("\"a/../b\"").is_err());
        assert!(serde_json::from_str::<DepositVersion>("0").is_err());
        assert!(serde_json::from_str::<OrgName>("\"ok\"").is_ok());
    }
}
