//! Principals: who can own a deposit or be granted access to one. A principal is a client (by
//! fingerprint) or a group of clients in an organisation.
//!
//! On the wire a principal is written relative to the caller's organisation: a fingerprint, or
//! `group:NAME`. In storage a group is qualified with its organisation: `group:ORG/NAME`, so the
//! stored form is unique across the whole server and never collides with a fingerprint (64 hex
//! characters).

use crate::names::NameError;
use crate::{ClientFingerprint, OrgName};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The rule for group names (the same characters as organisation names).
pub const GROUP_NAME_RULE: &str = "a group name is 1-64 characters of a-z A-Z 0-9 . _ -, \
     starting with a letter or digit";

/// The name of a group of clients inside one organisation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct GroupName(String);

impl GroupName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        OrgName::parse(s)
            .map(|_| Self(s.to_owned()))
            .map_err(|_| NameError::new(format!("invalid group name {s:?}: {GROUP_NAME_RULE}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A client or a group, fully qualified.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Principal {
    Client(ClientFingerprint),
    Group { org: OrgName, name: GroupName },
}

/// What starts the wire form of a group principal (`group:NAME`).
pub const GROUP_PREFIX: &str = "group:";

impl Principal {
    /// Parses the wire form (`FINGERPRINT` or `group:NAME`), placing a group in `org`.
    pub fn parse_in(s: &str, org: &OrgName) -> Result<Self, NameError> {
        match s.strip_prefix(GROUP_PREFIX) {
            Some(g) => Ok(Principal::Group {
                org: org.clone(),
                name: GroupName::parse(g)?,
            }),
            None => ClientFingerprint::parse(s)
                .map(Principal::Client)
                .map_err(|_| {
                    NameError::new(format!(
                        "invalid principal {:?}: a client fingerprint (64 hex characters) or \
                     group:NAME",
                        s.chars().take(80).collect::<String>()
                    ))
                }),
        }
    }

    /// Parses the stored form (`FINGERPRINT` or `group:ORG/NAME`).
    pub fn parse_stored(s: &str) -> Result<Self, NameError> {
        match s.strip_prefix(GROUP_PREFIX) {
            Some(rest) => {
                let (org, name) = rest
                    .split_once('/')
                    .ok_or_else(|| NameError::new(format!("invalid stored principal {s:?}")))?;
                Ok(Principal::Group {
                    org: OrgName::parse(org)?,
                    name: GroupName::parse(name)?,
                })
            }
            None => ClientFingerprint::parse(s)
                .map(Principal::Client)
                .map_err(|_| NameError::new(format!("invalid stored principal {s:?}"))),
        }
    }

    /// The stored form: unique across the server.
    pub fn stored(&self) -> String {
        self.stored_str().into_owned()
    }

    /// The stored form, borrowed where it is the principal's own text (a client's fingerprint):
    /// for encodings on hot paths that only read it.
    pub fn stored_str(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Principal::Client(fp) => std::borrow::Cow::Borrowed(fp.as_str()),
            Principal::Group { org, name } => format!("{GROUP_PREFIX}{org}/{name}").into(),
        }
    }

    /// The wire form, relative to an organisation (groups lose their organisation).
    pub fn wire(&self) -> String {
        match self {
            Principal::Client(fp) => fp.as_str().to_owned(),
            Principal::Group { name, .. } => format!("{GROUP_PREFIX}{name}"),
        }
    }

    pub fn as_client(&self) -> Option<&ClientFingerprint> {
        match self {
            Principal::Client(fp) => Some(fp),
            Principal::Group { .. } => None,
        }
    }

    pub fn is_group(&self) -> bool {
        matches!(self, Principal::Group { .. })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.wire())
    }
}

impl From<ClientFingerprint> for Principal {
    fn from(fp: ClientFingerprint) -> Self {
        Principal::Client(fp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_and_stored_forms() {
        let org = OrgName::parse("acme").unwrap();
        let fp = "ab".repeat(32);
        let c = Principal::parse_in(&fp, &org).unwrap();
        assert_eq!(c.stored(), fp);
        assert_eq!(Principal::parse_stored(&c.stored()).unwrap(), c);
        let g = Principal::parse_in("group:kms", &org).unwrap();
        assert_eq!(g.stored(), "group:acme/kms");
        assert_eq!(g.wire(), "group:kms");
        assert_eq!(Principal::parse_stored("group:acme/kms").unwrap(), g);
        for bad in [
            "",
            "group:",
            "group:a/b",
            "xyz",
            "group:-x",
            &"g".repeat(64),
        ] {
            assert!(Principal::parse_in(bad, &org).is_err(), "{bad:?}");
        }
        assert!(Principal::parse_stored("group:acme").is_err());
    }
}
