//! Mutations of organisations, clients (state, role, sequenced tokens) and one-time
//! registration tokens. Each function is one [`Mutation`](keysafe_core::store::Mutation) and
//! keeps the contract written on its variant; it runs inside the writer's savepoint.

use super::{done_or_not_found, int};
use crate::sqlite::conn::{all, exec, one};
use crate::sqlite::rows::at;
use keysafe_core::store::{
    Applied, ClientRecord, OrgRecord, RegistrationTokenRecord, ReplacedToken, StoreError,
    StoreResult, TokenState,
};
use keysafe_proto::api::{AuthMode, ClientRole, ClientState};
use keysafe_proto::{ClientFingerprint, OrgName, Timestamp};
use rusqlite::{Connection, params};

fn recent_json(r: &[ReplacedToken]) -> StoreResult<String> {
    serde_json::to_string(r).map_err(|e| StoreError::Backend(e.to_string()))
}

fn client_exists(conn: &Connection, fp: &ClientFingerprint) -> StoreResult<bool> {
    Ok(one(
        conn,
        "SELECT 1 FROM clients WHERE fingerprint = ?1",
        [fp.as_str()],
        |_| Ok(()),
    )?
    .is_some())
}

pub(super) fn create_org(conn: &Connection, o: &OrgRecord) -> StoreResult<Applied> {
    let contacts =
        serde_json::to_string(&o.contacts).map_err(|e| StoreError::Backend(e.to_string()))?;
    exec(
        conn,
        "INSERT INTO orgs (name, contacts, auth_mode, auth_hash, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            o.name.as_str(),
            contacts,
            o.auth_mode.as_str(),
            o.auth_hash,
            o.created_at.unix_millis(),
            o.updated_at.unix_millis()
        ],
    )?;
    Ok(Applied::Done)
}

pub(super) fn set_org_auth(
    conn: &Connection,
    name: &OrgName,
    mode: AuthMode,
    auth_hash: Option<&str>,
    at: Timestamp,
) -> StoreResult<Applied> {
    let n = exec(
        conn,
        "UPDATE orgs SET auth_mode = ?2, auth_hash = ?3, updated_at = ?4 WHERE name = ?1",
        params![name.as_str(), mode.as_str(), auth_hash, at.unix_millis()],
    )?;
    done_or_not_found(n)
}

pub(super) fn insert_client(
    conn: &Connection,
    c: &ClientRecord,
    consume_token: Option<&str>,
) -> StoreResult<Applied> {
    if let Some(hash) = consume_token {
        let n = exec(
            conn,
            "UPDATE registration_tokens SET used_at = ?3, used_by = ?4 \
             WHERE hash = ?1 AND org = ?2 AND used_at IS NULL AND expires_at > ?3",
            params![
                hash,
                c.org.as_str(),
                c.created_at.unix_millis(),
                c.fingerprint.as_str()
            ],
        )?;
        done_or_not_found(n)?;
    }
    exec(
        conn,
        "INSERT INTO clients (fingerprint, org, name, state, role, cert_der, recipient, \
         token_counter, token_hash, token_recent, token_rotated_at, last_seen_at, \
         state_reason, created_at, updated_at, token_confirmed, token_kek_version, token_salt) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        params![
            c.fingerprint.as_str(),
            c.org.as_str(),
            c.name.as_ref().map(|n| n.as_str()),
            c.state.as_str(),
            c.role.as_str(),
            c.cert_der,
            c.recipient,
            int(c.token.counter),
            c.token.hash,
            recent_json(&c.token.recent)?,
            c.token.rotated_at.unix_millis(),
            c.last_seen_at.map(|t| t.unix_millis()),
            c.state_reason,
            c.created_at.unix_millis(),
            c.updated_at.unix_millis(),
            i64::from(c.token.confirmed),
            c.token
                .derivation
                .as_ref()
                .map(|d| i64::from(d.kek_version)),
            c.token.derivation.as_ref().map(|d| d.salt.as_slice()),
        ],
    )?;
    Ok(Applied::Done)
}

pub(super) fn insert_registration_token(
    conn: &Connection,
    t: &RegistrationTokenRecord,
) -> StoreResult<Applied> {
    exec(
        conn,
        "INSERT INTO registration_tokens (hash, org, created_by, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            t.hash,
            t.org.as_str(),
            t.created_by.as_str(),
            t.created_at.unix_millis(),
            t.expires_at.unix_millis()
        ],
    )?;
    Ok(Applied::Done)
}

pub(super) fn rotate_token(
    conn: &Connection,
    fingerprint: &ClientFingerprint,
    expected_counter: u64,
    token: &TokenState,
    at: Timestamp,
) -> StoreResult<Applied> {
    let n = exec(
        conn,
        "UPDATE clients SET token_counter = ?3, token_hash = ?4, token_recent = ?5, \
         token_rotated_at = ?6, last_seen_at = ?7, token_confirmed = ?8, \
         token_kek_version = ?9, token_salt = ?10 \
         WHERE fingerprint = ?1 AND token_counter = ?2 AND state = 'active'",
        params![
            fingerprint.as_str(),
            int(expected_counter),
            int(token.counter),
            token.hash,
            recent_json(&token.recent)?,
            token.rotated_at.unix_millis(),
            at.unix_millis(),
            i64::from(token.confirmed),
            token.derivation.as_ref().map(|d| i64::from(d.kek_version)),
            token.derivation.as_ref().map(|d| d.salt.as_slice()),
        ],
    )?;
    if n == 0 {
        // Only on the losing side of a race: tell a vanished client from a moved counter.
        return Err(if client_exists(conn, fingerprint)? {
            StoreError::Conflict
        } else {
            StoreError::NotFound
        });
    }
    Ok(Applied::Done)
}

pub(super) fn mark_suspected_clone(
    conn: &Connection,
    fingerprint: &ClientFingerprint,
    reason: &str,
    at: Timestamp,
) -> StoreResult<Applied> {
    let n = exec(
        conn,
        "UPDATE clients SET state = 'suspected-clone', state_reason = ?2, updated_at = ?3 \
         WHERE fingerprint = ?1",
        params![fingerprint.as_str(), reason, at.unix_millis()],
    )?;
    done_or_not_found(n)
}

pub(super) fn reset_token(
    conn: &Connection,
    fingerprint: &ClientFingerprint,
    at: Timestamp,
) -> StoreResult<Applied> {
    let n = exec(
        conn,
        "UPDATE clients SET token_hash = NULL, token_recent = '[]', token_confirmed = 0, \
         token_kek_version = NULL, token_salt = NULL, \
         state_reason = CASE state WHEN 'suspected-clone' THEN NULL ELSE state_reason END, \
         state = CASE state WHEN 'suspected-clone' THEN 'active' ELSE state END, \
         updated_at = ?2 WHERE fingerprint = ?1",
        params![fingerprint.as_str(), at.unix_millis()],
    )?;
    done_or_not_found(n)
}

pub(super) fn set_client_state(
    conn: &Connection,
    fingerprint: &ClientFingerprint,
    state: ClientState,
    at: Timestamp,
) -> StoreResult<Applied> {
    let n = exec(
        conn,
        "UPDATE clients SET state = ?2, updated_at = ?3 WHERE fingerprint = ?1",
        params![fingerprint.as_str(), state.as_str(), at.unix_millis()],
    )?;
    done_or_not_found(n)
}

pub(super) fn set_client_role(
    conn: &Connection,
    fingerprint: &ClientFingerprint,
    role: ClientRole,
    at: Timestamp,
) -> StoreResult<Applied> {
    let n = exec(
        conn,
        "UPDATE clients SET role = ?2, updated_at = ?3 WHERE fingerprint = ?1",
        params![fingerprint.as_str(), role.as_str(), at.unix_millis()],
    )?;
    done_or_not_found(n)
}

pub(super) fn disable_unactivated(
    conn: &Connection,
    registered_before: Timestamp,
    at_time: Timestamp,
) -> StoreResult<Applied> {
    let mut fps = all(
        conn,
        "UPDATE clients SET state = 'disabled', \
         state_reason = 'never used its registration', updated_at = ?2 \
         WHERE role = 'client' AND state IN ('pending', 'active') \
           AND last_seen_at IS NULL AND created_at < ?1 RETURNING fingerprint",
        params![registered_before.unix_millis(), at_time.unix_millis()],
        |r| {
            ClientFingerprint::parse(&at::<String>(r, 0)?)
                .map_err(|_| StoreError::Corrupt("fingerprint".into()))
        },
    )?;
    // RETURNING has no order of its own; the contract's is the fingerprint's.
    fps.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(Applied::Clients(fps))
}
