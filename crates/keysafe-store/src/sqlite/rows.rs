//! Decoding SQLite rows into domain records. A value that does not decode (an unknown state, a
//! negative size, a malformed name, a column of the wrong type) is reported as `Corrupt`:
//! somebody edited the row.

use keysafe_core::store::{
    ClientRecord, DepositRecord, GrantRecord, KekRecord, OrgRecord, StoreError, StoreResult,
    TokenDerivation, TokenState, VersionMeta, VersionRecord,
};
use keysafe_proto::api::{Access, AuthMode, ClientRole, ClientState, Encoding};
use keysafe_proto::{
    ClientFingerprint, ClientName, DepositName, DepositVersion, OrgName, Principal, Timestamp,
};
use rusqlite::Row;
use rusqlite::types::FromSql;

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// Where a column is: a name (found by scanning the statement's columns) or [`At`].
pub(crate) trait Column: Copy {
    fn index(self, row: &Row<'_>) -> StoreResult<usize>;
    fn name(self) -> &'static str;
}

impl Column for &'static str {
    fn index(self, row: &Row<'_>) -> StoreResult<usize> {
        row.as_ref()
            .column_index(self)
            .map_err(|e| StoreError::Corrupt(format!("column {self}: {e}")))
    }

    fn name(self) -> &'static str {
        self
    }
}

/// A column at a known position, checked against its name: one comparison where a lookup by
/// name compares every column before it. A query whose columns drift from its decoder fails as
/// `Corrupt`; a wrong column is never decoded.
#[derive(Clone, Copy)]
struct At(usize, &'static str);

impl Column for At {
    fn index(self, row: &Row<'_>) -> StoreResult<usize> {
        match row.as_ref().column_name(self.0) {
            Ok(n) if n.eq_ignore_ascii_case(self.1) => Ok(self.0),
            _ => Err(StoreError::Corrupt(format!(
                "column {} is not at position {}",
                self.1, self.0
            ))),
        }
    }

    fn name(self) -> &'static str {
        self.1
    }
}

/// Columns read in order from a first one: `next(name)` is the column after the previous one.
struct Seq {
    i: usize,
}

impl Seq {
    /// Starts at the column named `first` (found by name once).
    fn from(row: &Row<'_>, first: &'static str) -> StoreResult<Self> {
        Ok(Self {
            i: first.index(row)?,
        })
    }

    fn next(&mut self, name: &'static str) -> At {
        let at = At(self.i, name);
        self.i += 1;
        at
    }
}

pub(crate) fn col<T: FromSql>(row: &Row<'_>, c: impl Column) -> StoreResult<T> {
    row.get(c.index(row)?)
        .map_err(|e| StoreError::Corrupt(format!("column {}: {e}", c.name())))
}

/// A column by position, for queries whose columns have no useful names.
pub(crate) fn at<T: FromSql>(row: &Row<'_>, i: usize) -> StoreResult<T> {
    row.get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

pub(crate) fn ts(row: &Row<'_>, c: impl Column) -> StoreResult<Timestamp> {
    Ok(Timestamp::from_unix_millis(col::<i64>(row, c)?))
}

pub(crate) fn unsigned(row: &Row<'_>, c: impl Column) -> StoreResult<u64> {
    u64::try_from(col::<i64>(row, c)?).map_err(|_| corrupt(c.name()))
}

fn version(row: &Row<'_>, c: impl Column) -> StoreResult<DepositVersion> {
    DepositVersion::new(unsigned(row, c)?).map_err(|_| corrupt(c.name()))
}

pub(crate) fn principal(row: &Row<'_>, c: impl Column) -> StoreResult<Principal> {
    Principal::parse_stored(&col::<String>(row, c)?).map_err(|_| corrupt(c.name()))
}

pub(crate) fn fingerprint(row: &Row<'_>, c: impl Column) -> StoreResult<ClientFingerprint> {
    ClientFingerprint::parse(&col::<String>(row, c)?).map_err(|_| corrupt(c.name()))
}

pub(crate) fn org_name(row: &Row<'_>, c: impl Column) -> StoreResult<OrgName> {
    OrgName::parse(&col::<String>(row, c)?).map_err(|_| corrupt(c.name()))
}

pub(crate) fn deposit_name(row: &Row<'_>, c: impl Column) -> StoreResult<DepositName> {
    DepositName::parse(&col::<String>(row, c)?).map_err(|_| corrupt(c.name()))
}

pub(crate) fn kek_version(row: &Row<'_>, c: impl Column) -> StoreResult<u32> {
    u32::try_from(col::<i64>(row, c)?).map_err(|_| corrupt(c.name()))
}

pub(crate) fn kek(row: &Row<'_>) -> StoreResult<KekRecord> {
    Ok(KekRecord {
        version: kek_version(row, "version")?,
        seal: col(row, "seal")?,
        wrapped: col(row, "wrapped")?,
        created_at: ts(row, "created_at")?,
    })
}

pub(crate) fn org(row: &Row<'_>) -> StoreResult<OrgRecord> {
    let contacts: String = col(row, "contacts")?;
    Ok(OrgRecord {
        name: org_name(row, "name")?,
        contacts: serde_json::from_str(&contacts).map_err(|_| corrupt("contacts"))?,
        auth_mode: match col::<String>(row, "auth_mode")?.as_str() {
            "secret" => AuthMode::Secret,
            "approval" => AuthMode::Approval,
            _ => return Err(corrupt("auth_mode")),
        },
        auth_hash: col(row, "auth_hash")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

pub(crate) fn client(row: &Row<'_>) -> StoreResult<ClientRecord> {
    let name: Option<String> = col(row, "name")?;
    Ok(ClientRecord {
        fingerprint: fingerprint(row, "fingerprint")?,
        org: org_name(row, "org")?,
        name: name
            .map(|n| ClientName::parse(&n))
            .transpose()
            .map_err(|_| corrupt("name"))?,
        state: ClientState::parse(&col::<String>(row, "state")?).ok_or_else(|| corrupt("state"))?,
        role: ClientRole::parse(&col::<String>(row, "role")?).ok_or_else(|| corrupt("role"))?,
        cert_der: col(row, "cert_der")?,
        recipient: col(row, "recipient")?,
        token: TokenState {
            counter: unsigned(row, "token_counter")?,
            hash: col(row, "token_hash")?,
            recent: serde_json::from_str(&col::<String>(row, "token_recent")?)
                .map_err(|_| corrupt("token_recent"))?,
            rotated_at: ts(row, "token_rotated_at")?,
            confirmed: match col::<i64>(row, "token_confirmed")? {
                0 => false,
                1 => true,
                _ => return Err(corrupt("token_confirmed")),
            },
            derivation: match (
                col::<Option<i64>>(row, "token_kek_version")?,
                col::<Option<Vec<u8>>>(row, "token_salt")?,
            ) {
                (None, None) => None,
                (Some(v), Some(salt)) => Some(TokenDerivation {
                    kek_version: u32::try_from(v).map_err(|_| corrupt("token_kek_version"))?,
                    salt,
                }),
                _ => return Err(corrupt("token_salt")),
            },
        },
        last_seen_at: col::<Option<i64>>(row, "last_seen_at")?.map(Timestamp::from_unix_millis),
        state_reason: col(row, "state_reason")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
        mac: col(row, "mac")?,
    })
}

/// A deposit head: the columns of `deposit_cols!` (in that order), from `org` on.
pub(crate) fn deposit(row: &Row<'_>) -> StoreResult<DepositRecord> {
    let mut c = Seq::from(row, "org")?;
    Ok(DepositRecord {
        org: org_name(row, c.next("org"))?,
        owner: principal(row, c.next("owner"))?,
        name: deposit_name(row, c.next("name"))?,
        current_version: version(row, c.next("current_version"))?,
        current_size: unsigned(row, c.next("current_size"))?,
        deleted: col::<i64>(row, c.next("deleted"))? != 0,
        acl_serial: unsigned(row, c.next("acl_serial"))?,
        created_at: ts(row, c.next("created_at"))?,
        updated_at: ts(row, c.next("updated_at"))?,
        mac: col(row, c.next("mac"))?,
        newest_version: unsigned(row, c.next("newest_version"))?,
    })
}

/// A version's metadata: `v_version, v_size, v_creator, v_created_at, v_encoding` in that
/// order.
pub(crate) fn version_meta(row: &Row<'_>) -> StoreResult<VersionMeta> {
    version_meta_from(row, &mut Seq::from(row, "v_version")?)
}

fn version_meta_from(row: &Row<'_>, c: &mut Seq) -> StoreResult<VersionMeta> {
    Ok(VersionMeta {
        version: version(row, c.next("v_version"))?,
        size: unsigned(row, c.next("v_size"))?,
        creator: fingerprint(row, c.next("v_creator"))?,
        created_at: ts(row, c.next("v_created_at"))?,
        encoding: Encoding::parse(&col::<String>(row, c.next("v_encoding"))?)
            .ok_or_else(|| corrupt("encoding"))?,
    })
}

/// A whole version: [`version_meta`]'s columns, then `v_kek_version, v_wrapped_dek,
/// v_ciphertext`.
pub(crate) fn version_record(row: &Row<'_>) -> StoreResult<VersionRecord> {
    let mut c = Seq::from(row, "v_version")?;
    Ok(VersionRecord {
        meta: version_meta_from(row, &mut c)?,
        kek_version: kek_version(row, c.next("v_kek_version"))?,
        wrapped_dek: col(row, c.next("v_wrapped_dek"))?,
        ciphertext: col(row, c.next("v_ciphertext"))?,
    })
}

pub(crate) fn grant(row: &Row<'_>) -> StoreResult<GrantRecord> {
    Ok(GrantRecord {
        grantee: principal(row, "g_grantee")?,
        access: Access::parse(&col::<String>(row, "g_access")?).ok_or_else(|| corrupt("access"))?,
        granted_by: fingerprint(row, "g_granted_by")?,
        granted_at: ts(row, "g_granted_at")?,
        mac: col(row, "g_mac")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<T>(select: &str, f: impl FnOnce(&Row<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::conn::open_with(&dir.path().join("x.db"), false, true).unwrap();
        let mut st = conn.prepare(select).unwrap();
        let mut rows = st.query([]).unwrap();
        f(rows.next().unwrap().unwrap())
    }

    const META: &str = "3 AS v_version, 32 AS v_size, \
        'b3c8f1c1a6c8e9d1c0a1b2c3d4e5f60718293a4b5c6d7e8f9012345678901234' AS v_creator, \
        1000 AS v_created_at, 'raw' AS v_encoding";

    /// Positional columns are checked by name: the decoder finds its first column by name and
    /// reads the rest in order, and a query with two columns swapped is refused.
    #[test]
    fn columns_read_by_position_are_checked_by_name() {
        let meta = decode(&format!("SELECT {META}"), version_meta).unwrap();
        assert_eq!((meta.version.get(), meta.size), (3, 32));
        let swapped = META.replace("32 AS v_size", "32 AS v_sizes");
        let err = decode(&format!("SELECT {swapped}"), version_meta).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(m) if m.contains("v_size")),
            "{err:?}"
        );
        let missing = decode("SELECT 1 AS v_size", version_meta).unwrap_err();
        assert!(matches!(missing, StoreError::Corrupt(_)), "{missing:?}");
    }
}
