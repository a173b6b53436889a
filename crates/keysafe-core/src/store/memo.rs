//! What a read derives from a version row, kept with the row for as long as something holds it.
//!
//! A backend that keeps rows in memory (SQLite's cache of current versions) hands the same
//! [`VersionRow`] to every read of a deposit until the deposit changes; a read that derives the
//! version's content tag, or unwraps its data key, leaves the result here so that the next read
//! of the same row does not derive it again. Both are functions of the row's own fields (the
//! row never changes once shared: a write makes a new row), so a memo can never disagree with
//! its row. Rows read from the backend each time (PostgreSQL) start with an empty memo and are
//! dropped after the read, so nothing is kept.
//!
//! The data key is a secret: it is zeroised when the row is dropped, never printed, and the
//! service keeps it only while the keyring is unsealed and not in the seal's per-deposit mode
//! (where every read must reach the HSM); sealing empties the backend's cache of rows
//! ([`super::DepositStore::forget_cached_rows`]).

use super::{DepositRecord, VersionRecord, VersionRow};
use crate::crypto::SecretKey;
use std::sync::{Arc, OnceLock};

/// Derived values of one shared version row; see the module documentation.
#[derive(Default)]
pub struct ReadMemo {
    etag: OnceLock<Arc<str>>,
    dek: OnceLock<SecretKey>,
}

impl ReadMemo {
    /// The content tag a read derived from this row, if one did.
    pub fn etag(&self) -> Option<&Arc<str>> {
        self.etag.get()
    }

    /// Keeps the row's content tag (a second call keeps the first value: both are equal).
    pub fn keep_etag(&self, tag: Arc<str>) {
        let _ = self.etag.set(tag);
    }

    /// The data key a read unwrapped from this row, if one did and kept it. Only the service
    /// reads it, after the checks a read makes.
    pub(crate) fn dek(&self) -> Option<&SecretKey> {
        self.dek.get()
    }

    /// Whether a read kept the row's data key (for tests and diagnostics: not the key).
    pub fn holds_dek(&self) -> bool {
        self.dek.get().is_some()
    }

    /// Keeps the row's unwrapped data key (a second call keeps the first value: both are
    /// equal). Only the service calls it, and only under the rules in the module documentation.
    pub(crate) fn keep_dek(&self, dek: SecretKey) {
        let _ = self.dek.set(dek);
    }

    /// The heap bytes a full memo holds at most (the tag's text; the key is inline), for
    /// caches that weigh their rows.
    pub const HEAP_BYTES: usize = 64;
}

/// A copy starts empty: the values are derived again from the copied row when needed.
impl Clone for ReadMemo {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Never prints the data key, nor the tag (which says nothing but is noise in a record).
impl std::fmt::Debug for ReadMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadMemo")
            .field("etag", &self.etag.get().is_some())
            .field("dek", &self.dek.get().is_some())
            .finish()
    }
}

/// Memos are derived from the rows they sit beside: two rows are equal when their records are,
/// whatever either memo holds.
impl PartialEq for ReadMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ReadMemo {}

/// A shared row of a deposit's header and one version, with an empty memo.
pub fn version_row(deposit: DepositRecord, version: VersionRecord) -> VersionRow {
    Arc::new((deposit, version, ReadMemo::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memo_keeps_its_first_values_and_copies_start_empty() {
        let m = ReadMemo::default();
        assert!(m.etag().is_none() && m.dek().is_none());
        m.keep_etag("1-aa".into());
        m.keep_etag("1-bb".into());
        assert_eq!(m.etag().map(|t| &**t), Some("1-aa"));
        let k = SecretKey::from_slice(&[7; 32]).unwrap();
        m.keep_dek(k);
        m.keep_dek(SecretKey::from_slice(&[8; 32]).unwrap());
        assert_eq!(m.dek().unwrap().expose(), &[7; 32]);
        let copy = m.clone();
        assert!(copy.etag().is_none() && copy.dek().is_none());
    }

    #[test]
    fn debug_names_no_key() {
        let m = ReadMemo::default();
        m.keep_dek(SecretKey::from_slice(&[0xab; 32]).unwrap());
        let shown = format!("{m:?}");
        assert_eq!(shown, "ReadMemo { etag: false, dek: true }");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab, "));
    }
}
