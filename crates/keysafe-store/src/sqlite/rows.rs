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

pub(crate) fn col<T: FromSql>(row: &Row<'_>, name: &str) -> StoreResult<T> {
    row.get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// A column by position, for queries whose columns have no useful names.
pub(crate) fn at<T: FromSql>(row: &Row<'_>, i: usize) -> StoreResult<T> {
    row.get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

pub(crate) fn ts(row: &Row<'_>, name: &str) -> StoreResult<Timestamp> {
    Ok(Timestamp::from_unix_millis(col::<i64>(row, name)?))
}

pub(crate) fn unsigned(row: &Row<'_>, name: &str) -> StoreResult<u64> {
    u64::try_from(col::<i64>(row, name)?).map_err(|_| corrupt(name))
}

fn version(row: &Row<'_>, name: &str) -> StoreResult<DepositVersion> {
    DepositVersion::new(unsigned(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn principal(row: &Row<'_>, name: &str) -> StoreResult<Principal> {
    Principal::parse_stored(&col::<String>(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn fingerprint(row: &Row<'_>, name: &str) -> StoreResult<ClientFingerprint> {
    ClientFingerprint::parse(&col::<String>(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn org_name(row: &Row<'_>, name: &str) -> StoreResult<OrgName> {
    OrgName::parse(&col::<String>(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn deposit_name(row: &Row<'_>, name: &str) -> StoreResult<DepositName> {
    DepositName::parse(&col::<String>(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn kek_version(row: &Row<'_>, name: &str) -> StoreResult<u32> {
    u32::try_from(col::<i64>(row, name)?).map_err(|_| corrupt(name))
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

pub(crate) fn deposit(row: &Row<'_>) -> StoreResult<DepositRecord> {
    Ok(DepositRecord {
        org: org_name(row, "org")?,
        owner: principal(row, "owner")?,
        name: deposit_name(row, "name")?,
        current_version: version(row, "current_version")?,
        current_size: unsigned(row, "current_size")?,
        deleted: col::<i64>(row, "deleted")? != 0,
        acl_serial: unsigned(row, "acl_serial")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
        mac: col(row, "mac")?,
        newest_version: unsigned(row, "newest_version")?,
    })
}

pub(crate) fn version_meta(row: &Row<'_>) -> StoreResult<VersionMeta> {
    Ok(VersionMeta {
        version: version(row, "v_version")?,
        size: unsigned(row, "v_size")?,
        created_at: ts(row, "v_created_at")?,
        creator: fingerprint(row, "v_creator")?,
        encoding: Encoding::parse(&col::<String>(row, "v_encoding")?)
            .ok_or_else(|| corrupt("encoding"))?,
    })
}

pub(crate) fn version_record(row: &Row<'_>) -> StoreResult<VersionRecord> {
    Ok(VersionRecord {
        meta: version_meta(row)?,
        kek_version: kek_version(row, "v_kek_version")?,
        wrapped_dek: col(row, "v_wrapped_dek")?,
        ciphertext: col(row, "v_ciphertext")?,
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
