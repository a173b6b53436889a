//! Mutations of organisations, clients (state, role, sequenced tokens) and one-time
//! registration tokens. Each function is one [`Mutation`](keysafe_core::store::Mutation) and
//! keeps the contract written on its variant; it runs inside the writer's savepoint.

use super::{done_or_not_found, int, write_error};
use crate::sqlite::backend_error;
use keysafe_core::store::{
    Applied, ClientRecord, OrgRecord, RegistrationTokenRecord, ReplacedToken, StoreError,
    StoreResult, TokenState,
};
use keysafe_proto::api::{AuthMode, ClientRole, ClientState};
use keysafe_proto::{ClientFingerprint, OrgName, Timestamp};
use sqlx::SqliteConnection;

fn recent_json(r: &[ReplacedToken]) -> StoreResult<String> {
    serde_json::to_string(r).map_err(|e| StoreError::Backend(e.to_string()))
}

async fn client_exists(conn: &mut SqliteConnection, fp: &ClientFingerprint) -> StoreResult<bool> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM clients WHERE fingerprint = ?1")
        .bind(fp.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend_error)?;
    Ok(row.is_some())
}

pub(super) async fn create_org(conn: &mut SqliteConnection, o: &OrgRecord) -> StoreResult<Applied> {
    let contacts =
        serde_json::to_string(&o.contacts).map_err(|e| StoreError::Backend(e.to_string()))?;
    sqlx::query(
        "INSERT INTO orgs (name, contacts, auth_mode, auth_hash, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(o.name.as_str())
    .bind(contacts)
    .bind(o.auth_mode.as_str())
    .bind(o.auth_hash.as_deref())
    .bind(o.created_at.unix_millis())
    .bind(o.updated_at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    Ok(Applied::Done)
}

pub(super) async fn set_org_auth(
    conn: &mut SqliteConnection,
    name: &OrgName,
    mode: AuthMode,
    auth_hash: Option<&str>,
    at: Timestamp,
) -> StoreResult<Applied> {
    let r = sqlx::query(
        "UPDATE orgs SET auth_mode = ?2, auth_hash = ?3, updated_at = ?4 WHERE name = ?1",
    )
    .bind(name.as_str())
    .bind(mode.as_str())
    .bind(auth_hash)
    .bind(at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    done_or_not_found(r.rows_affected())
}

pub(super) async fn insert_client(
    conn: &mut SqliteConnection,
    c: &ClientRecord,
    consume_token: Option<&str>,
) -> StoreResult<Applied> {
    if let Some(hash) = consume_token {
        let r = sqlx::query(
            "UPDATE registration_tokens SET used_at = ?3, used_by = ?4 \
             WHERE hash = ?1 AND org = ?2 AND used_at IS NULL AND expires_at > ?3",
        )
        .bind(hash)
        .bind(c.org.as_str())
        .bind(c.created_at.unix_millis())
        .bind(c.fingerprint.as_str())
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
        done_or_not_found(r.rows_affected())?;
    }
    sqlx::query(
        "INSERT INTO clients (fingerprint, org, name, state, role, cert_der, recipient, \
         token_counter, token_hash, token_recent, token_rotated_at, last_seen_at, \
         state_reason, created_at, updated_at, token_confirmed, token_kek_version, token_salt) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )
    .bind(c.fingerprint.as_str())
    .bind(c.org.as_str())
    .bind(c.name.as_ref().map(|n| n.as_str()))
    .bind(c.state.as_str())
    .bind(c.role.as_str())
    .bind(&c.cert_der)
    .bind(c.recipient.as_deref())
    .bind(int(c.token.counter))
    .bind(c.token.hash.as_deref())
    .bind(recent_json(&c.token.recent)?)
    .bind(c.token.rotated_at.unix_millis())
    .bind(c.last_seen_at.map(|t| t.unix_millis()))
    .bind(c.state_reason.as_deref())
    .bind(c.created_at.unix_millis())
    .bind(c.updated_at.unix_millis())
    .bind(i64::from(c.token.confirmed))
    .bind(
        c.token
            .derivation
            .as_ref()
            .map(|d| i64::from(d.kek_version)),
    )
    .bind(c.token.derivation.as_ref().map(|d| d.salt.as_slice()))
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    Ok(Applied::Done)
}

pub(super) async fn insert_registration_token(
    conn: &mut SqliteConnection,
    t: &RegistrationTokenRecord,
) -> StoreResult<Applied> {
    sqlx::query(
        "INSERT INTO registration_tokens (hash, org, created_by, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(&t.hash)
    .bind(t.org.as_str())
    .bind(t.created_by.as_str())
    .bind(t.created_at.unix_millis())
    .bind(t.expires_at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    Ok(Applied::Done)
}

pub(super) async fn rotate_token(
    conn: &mut SqliteConnection,
    fingerprint: &ClientFingerprint,
    expected_counter: u64,
    token: &TokenState,
    at: Timestamp,
) -> StoreResult<Applied> {
    let r = sqlx::query(
        "UPDATE clients SET token_counter = ?3, token_hash = ?4, token_recent = ?5, \
         token_rotated_at = ?6, last_seen_at = ?7, token_confirmed = ?8, \
         token_kek_version = ?9, token_salt = ?10 \
         WHERE fingerprint = ?1 AND token_counter = ?2 AND state = 'active'",
    )
    .bind(fingerprint.as_str())
    .bind(int(expected_counter))
    .bind(int(token.counter))
    .bind(token.hash.as_deref())
    .bind(recent_json(&token.recent)?)
    .bind(token.rotated_at.unix_millis())
    .bind(at.unix_millis())
    .bind(i64::from(token.confirmed))
    .bind(token.derivation.as_ref().map(|d| i64::from(d.kek_version)))
    .bind(token.derivation.as_ref().map(|d| d.salt.as_slice()))
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    if r.rows_affected() == 0 {
        // Only on the losing side of a race: tell a vanished client from a moved counter.
        return Err(if client_exists(conn, fingerprint).await? {
            StoreError::Conflict
        } else {
            StoreError::NotFound
        });
    }
    Ok(Applied::Done)
}

pub(super) async fn mark_suspected_clone(
    conn: &mut SqliteConnection,
    fingerprint: &ClientFingerprint,
    reason: &str,
    at: Timestamp,
) -> StoreResult<Applied> {
    let r = sqlx::query(
        "UPDATE clients SET state = 'suspected-clone', state_reason = ?2, updated_at = ?3 \
         WHERE fingerprint = ?1",
    )
    .bind(fingerprint.as_str())
    .bind(reason)
    .bind(at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    done_or_not_found(r.rows_affected())
}

pub(super) async fn reset_token(
    conn: &mut SqliteConnection,
    fingerprint: &ClientFingerprint,
    at: Timestamp,
) -> StoreResult<Applied> {
    let r = sqlx::query(
        "UPDATE clients SET token_hash = NULL, token_recent = '[]', token_confirmed = 0, \
         token_kek_version = NULL, token_salt = NULL, \
         state_reason = CASE state WHEN 'suspected-clone' THEN NULL ELSE state_reason END, \
         state = CASE state WHEN 'suspected-clone' THEN 'active' ELSE state END, \
         updated_at = ?2 WHERE fingerprint = ?1",
    )
    .bind(fingerprint.as_str())
    .bind(at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    done_or_not_found(r.rows_affected())
}

pub(super) async fn set_client_state(
    conn: &mut SqliteConnection,
    fingerprint: &ClientFingerprint,
    state: ClientState,
    at: Timestamp,
) -> StoreResult<Applied> {
    let r = sqlx::query("UPDATE clients SET state = ?2, updated_at = ?3 WHERE fingerprint = ?1")
        .bind(fingerprint.as_str())
        .bind(state.as_str())
        .bind(at.unix_millis())
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    done_or_not_found(r.rows_affected())
}

pub(super) async fn set_client_role(
    conn: &mut SqliteConnection,
    fingerprint: &ClientFingerprint,
    role: ClientRole,
    at: Timestamp,
) -> StoreResult<Applied> {
    let r = sqlx::query("UPDATE clients SET role = ?2, updated_at = ?3 WHERE fingerprint = ?1")
        .bind(fingerprint.as_str())
        .bind(role.as_str())
        .bind(at.unix_millis())
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    done_or_not_found(r.rows_affected())
}

pub(super) async fn disable_unactivated(
    conn: &mut SqliteConnection,
    registered_before: Timestamp,
    at: Timestamp,
) -> StoreResult<Applied> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "UPDATE clients SET state = 'disabled', \
         state_reason = 'never used its registration', updated_at = ?2 \
         WHERE role = 'client' AND state IN ('pending', 'active') \
           AND last_seen_at IS NULL AND created_at < ?1 RETURNING fingerprint",
    )
    .bind(registered_before.unix_millis())
    .bind(at.unix_millis())
    .fetch_all(&mut *conn)
    .await
    .map_err(write_error)?;
    let mut fps = rows
        .into_iter()
        .map(|(f,)| {
            ClientFingerprint::parse(&f).map_err(|_| StoreError::Corrupt("fingerprint".into()))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    // RETURNING has no order of its own; the contract's is the fingerprint's.
    fps.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(Applied::Clients(fps))
}
