//! Decoding PostgreSQL rows into domain records, and the integer conversions every statement
//! needs. A value that does not decode (an unknown state, a negative size, a malformed name) is
//! reported as `Corrupt`: somebody edited the row.

use keysafe_core::store::{
    ClientRecord, DepositRecord, GrantRecord, KekRecord, OrgRecord, StoreError, StoreResult,
    TokenDerivation, TokenState, VersionMeta, VersionRecord,
};
use keysafe_proto::api::{Access, AuthMode, ClientRole, ClientState, Encoding};
use keysafe_proto::{
    ClientFingerprint, ClientName, DepositName, DepositVersion, GroupName, OrgName, Principal,
    Timestamp,
};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// A u64 as BIGINT. Values past i64::MAX cannot come from a real counter; they saturate.
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn col<'r, T: FromSql<'r>>(row: &'r Row, name: &str) -> StoreResult<T> {
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

pub(crate) fn ts(row: &Row, name: &str) -> StoreResult<Timestamp> {
    Ok(Timestamp::from_unix_millis(col::<i64>(row, name)?))
}

pub(crate) fn unsigned(row: &Row, name: &str) -> StoreResult<u64> {
    u64::try_from(col::<i64>(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn u32_col(row: &Row, name: &str) -> StoreResult<u32> {
    u32::try_from(col::<i64>(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn version(row: &Row, name: &str) -> StoreResult<DepositVersion> {
    DepositVersion::new(unsigned(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn principal(row: &Row, name: &str) -> StoreResult<Principal> {
    Principal::parse_stored(col::<&str>(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn fingerprint(row: &Row, name: &str) -> StoreResult<ClientFingerprint> {
    ClientFingerprint::parse(col::<&str>(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn org_name(row: &Row, name: &str) -> StoreResult<OrgName> {
    OrgName::parse(col::<&str>(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn group_name(row: &Row, name: &str) -> StoreResult<GroupName> {
    GroupName::parse(col::<&str>(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn deposit_name(row: &Row, name: &str) -> StoreResult<DepositName> {
    DepositName::parse(col::<&str>(row, name)?).map_err(|_| corrupt(name))
}

pub(crate) fn kek(row: &Row) -> StoreResult<KekRecord> {
    Ok(KekRecord {
        version: u32_col(row, "version")?,
        seal: col(row, "seal")?,
        wrapped: col(row, "wrapped")?,
        created_at: ts(row, "created_at")?,
    })
}

pub(crate) fn org(row: &Row) -> StoreResult<OrgRecord> {
    Ok(OrgRecord {
        name: org_name(row, "name")?,
        contacts: serde_json::from_str(col(row, "contacts")?).map_err(|_| corrupt("contacts"))?,
        auth_mode: match col::<&str>(row, "auth_mode")? {
            "secret" => AuthMode::Secret,
            "approval" => AuthMode::Approval,
            _ => return Err(corrupt("auth_mode")),
        },
        auth_hash: col(row, "auth_hash")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

pub(crate) fn client(row: &Row) -> StoreResult<ClientRecord> {
    let name: Option<&str> = col(row, "name")?;
    Ok(ClientRecord {
        fingerprint: fingerprint(row, "fingerprint")?,
        org: org_name(row, "org")?,
        name: name
            .map(ClientName::parse)
            .transpose()
            .map_err(|_| corrupt("name"))?,
        state: ClientState::parse(col(row, "state")?).ok_or_else(|| corrupt("state"))?,
        role: ClientRole::parse(col(row, "role")?).ok_or_else(|| corrupt("role"))?,
        cert_der: col(row, "cert_der")?,
        recipient: col(row, "recipient")?,
        token: TokenState {
            counter: unsigned(row, "token_counter")?,
            hash: col(row, "token_hash")?,
            recent: serde_json::from_str(col(row, "token_recent")?)
                .map_err(|_| corrupt("token_recent"))?,
            rotated_at: ts(row, "token_rotated_at")?,
            confirmed: col(row, "token_confirmed")?,
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

pub(crate) fn deposit(row: &Row) -> StoreResult<DepositRecord> {
    Ok(DepositRecord {
        org: org_name(row, "org")?,
        owner: principal(row, "owner")?,
        name: deposit_name(row, "name")?,
        current_version: version(row, "current_version")?,
        current_size: unsigned(row, "current_size")?,
        deleted: col(row, "deleted")?,
        acl_serial: unsigned(row, "acl_serial")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
        mac: col(row, "mac")?,
        newest_version: unsigned(row, "newest_version")?,
    })
}

pub(crate) fn version_meta(row: &Row) -> StoreResult<VersionMeta> {
    Ok(VersionMeta {
        version: version(row, "v_version")?,
        size: unsigned(row, "v_size")?,
        created_at: ts(row, "v_created_at")?,
        creator: fingerprint(row, "v_creator")?,
        encoding: Encoding::parse(col(row, "v_encoding")?).ok_or_else(|| corrupt("encoding"))?,
    })
}

pub(crate) fn version_record(row: &Row) -> StoreResult<VersionRecord> {
    Ok(VersionRecord {
        meta: version_meta(row)?,
        kek_version: u32_col(row, "v_kek_version")?,
        wrapped_dek: col(row, "v_wrapped_dek")?,
        ciphertext: col(row, "v_ciphertext")?,
    })
}

pub(crate) fn grant(row: &Row) -> StoreResult<GrantRecord> {
    Ok(GrantRecord {
        grantee: principal(row, "g_grantee")?,
        access: Access::parse(col(row, "g_access")?).ok_or_else(|| corrupt("access"))?,
        granted_by: fingerprint(row, "g_granted_by")?,
        granted_at: ts(row, "g_granted_at")?,
        mac: col(row, "g_mac")?,
    })
}
