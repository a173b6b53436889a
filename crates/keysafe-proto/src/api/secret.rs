//! [`AuthSecret`]: an organisation auth secret, a registration token or any other bearer
//! secret in transit, zeroised on drop and never shown by `Debug`.

use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// An organisation auth secret (or any other bearer secret) in transit. Zeroised on drop; its
/// `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AuthSecret(Zeroizing<String>);

impl AuthSecret {
    /// The shortest secret an administrator may set by hand.
    pub const MIN_LEN: usize = 16;

    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AuthSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthSecret([redacted])")
    }
}
