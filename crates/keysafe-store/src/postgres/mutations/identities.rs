//! Organisations, clients, registration tokens and sequenced tokens.

use super::{exec, not_found_if_none, query, query_opt};
use crate::postgres::rows::{corrupt, int};
use crate::postgres::writer::{Tx, TxResult};
use keysafe_core::store::{
    Applied, ClientRecord, OrgRecord, RegistrationTokenRecord, ReplacedToken, StoreError,
    TokenState,
};
use keysafe_proto::api::{AuthMode, ClientRole, ClientState};
use keysafe_proto::{ClientFingerprint, OrgName, Timestamp};

fn recent_json(r: &[ReplacedToken]) -> TxResult<String> {
    serde_json::to_string(r).map_err(|e| StoreError::Backend(e.to_string()).into())
}

pub(super) async fn create_org(tx: &Tx<'_>, o: &OrgRecord) -> TxResult<Applied> {
    let contacts =
        serde_json::to_string(&o.contacts).map_err(|e| StoreError::Backend(e.to_string()))?;
    exec(
        tx,
        "INSERT INTO orgs (name, contacts, auth_mode, auth_hash, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &o.name.as_str(),
            &contacts,
            &o.auth_mode.as_str(),
            &o.auth_hash,
            &o.created_at.unix_millis(),
            &o.updated_at.unix_millis(),
        ],
    )
    .await?;
    Ok(Applied::Done)
}

pub(super) async fn set_org_auth(
    tx: &Tx<'_>,
    name: &OrgName,
    mode: AuthMode,
    auth_hash: Option<&str>,
    at: Timestamp,
) -> TxResult<Applied> {
    let n = exec(
        tx,
        "UPDATE orgs SET auth_mode = $2, auth_hash = $3, updated_at = $4 WHERE name = $1",
        &[
            &name.as_str(),
            &mode.as_str(),
            &auth_hash,
            &at.unix_millis(),
        ],
    )
    .await?;
    not_found_if_none(n)
}

pub(super) async fn insert_client(
    tx: &Tx<'_>,
    c: &ClientRecord,
    consume_token: Option<&str>,
) -> TxResult<Applied> {
    if let Some(hash) = consume_token {
        // Conditional UPDATE: of two registrations racing for one token, only one finds it
        // unused (the second waits for the first's row lock, then re-checks `used_at`).
        let n = exec(
            tx,
            "UPDATE registration_tokens SET used_at = $3, used_by = $4 \
             WHERE hash = $1 AND org = $2 AND used_at IS NULL AND expires_at > $3",
            &[
                &hash,
                &c.org.as_str(),
                &c.created_at.unix_millis(),
                &c.fingerprint.as_str(),
            ],
        )
        .await?;
        not_found_if_none(n)?;
    }
    exec(
        tx,
        "INSERT INTO clients (fingerprint, org, name, state, role, cert_der, recipient, \
         token_counter, token_hash, token_recent, token_rotated_at, last_seen_at, \
         state_reason, created_at, updated_at, token_confirmed, token_kek_version, token_salt) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        &[
            &c.fingerprint.as_str(),
            &c.org.as_str(),
            &c.name.as_ref().map(|n| n.as_str()),
            &c.state.as_str(),
            &c.role.as_str(),
            &c.cert_der,
            &c.recipient,
            &int(c.token.counter),
            &c.token.hash,
            &recent_json(&c.token.recent)?,
            &c.token.rotated_at.unix_millis(),
            &c.last_seen_at.map(|t| t.unix_millis()),
            &c.state_reason,
            &c.created_at.unix_millis(),
            &c.updated_at.unix_millis(),
            &c.token.confirmed,
            &c.token
                .derivation
                .as_ref()
                .map(|d| i64::from(d.kek_version)),
            &c.token.derivation.as_ref().map(|d| d.salt.as_slice()),
        ],
    )
    .await?;
    Ok(Applied::Done)
}

pub(super) async fn insert_registration_token(
    tx: &Tx<'_>,
    t: &RegistrationTokenRecord,
) -> TxResult<Applied> {
    exec(
        tx,
        "INSERT INTO registration_tokens (hash, org, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &t.hash,
            &t.org.as_str(),
            &t.created_by.as_str(),
            &t.created_at.unix_millis(),
            &t.expires_at.unix_millis(),
        ],
    )
    .await?;
    Ok(Applied::Done)
}

/// Compare-and-set on the counter, for active clients only. A conditional UPDATE: of several
/// rotations with the same expected counter (from any node), the first takes the row lock and
/// the others re-check the counter after it commits, find it moved, and touch nothing. The
/// loser is told whether the client is gone (`NotFound`) or moved on (`Conflict`).
pub(super) async fn rotate_token(
    tx: &Tx<'_>,
    fingerprint: &ClientFingerprint,
    expected_counter: u64,
    token: &TokenState,
    at: Timestamp,
) -> TxResult<Applied> {
    let n = exec(
        tx,
        "UPDATE clients SET token_counter = $3, token_hash = $4, token_recent = $5, \
         token_rotated_at = $6, last_seen_at = $7, token_confirmed = $8, \
         token_kek_version = $9, token_salt = $10 \
         WHERE fingerprint = $1 AND token_counter = $2 AND state = 'active'",
        &[
            &fingerprint.as_str(),
            &int(expected_counter),
            &int(token.counter),
            &token.hash,
            &recent_json(&token.recent)?,
            &token.rotated_at.unix_millis(),
            &at.unix_millis(),
            &token.confirmed,
            &token.derivation.as_ref().map(|d| i64::from(d.kek_version)),
            &token.derivation.as_ref().map(|d| d.salt.as_slice()),
        ],
    )
    .await?;
    if n == 0 {
        let exists = query_opt(
            tx,
            "SELECT 1 FROM clients WHERE fingerprint = $1",
            &[&fingerprint.as_str()],
        )
        .await?
        .is_some();
        return Err(if exists {
            StoreError::Conflict
        } else {
            StoreError::NotFound
        }
        .into());
    }
    Ok(Applied::Done)
}

pub(super) async fn mark_suspected_clone(
    tx: &Tx<'_>,
    fingerprint: &ClientFingerprint,
    reason: &str,
    at: Timestamp,
) -> TxResult<Applied> {
    let n = exec(
        tx,
        "UPDATE clients SET state = 'suspected-clone', state_reason = $2, updated_at = $3 \
         WHERE fingerprint = $1",
        &[&fingerprint.as_str(), &reason, &at.unix_millis()],
    )
    .await?;
    not_found_if_none(n)
}

pub(super) async fn reset_token(
    tx: &Tx<'_>,
    fingerprint: &ClientFingerprint,
    at: Timestamp,
) -> TxResult<Applied> {
    let n = exec(
        tx,
        "UPDATE clients SET token_hash = NULL, token_recent = '[]', token_confirmed = false, \
         token_kek_version = NULL, token_salt = NULL, \
         state_reason = CASE state WHEN 'suspected-clone' THEN NULL ELSE state_reason END, \
         state = CASE state WHEN 'suspected-clone' THEN 'active' ELSE state END, \
         updated_at = $2 WHERE fingerprint = $1",
        &[&fingerprint.as_str(), &at.unix_millis()],
    )
    .await?;
    not_found_if_none(n)
}

/// Ordinary clients (not administrators), pending or active, registered before the cutoff and
/// never seen. Answers their fingerprints in byte order.
pub(super) async fn disable_unactivated(
    tx: &Tx<'_>,
    registered_before: Timestamp,
    at: Timestamp,
) -> TxResult<Applied> {
    let rows = query(
        tx,
        "UPDATE clients SET state = 'disabled', \
         state_reason = 'never used its registration', updated_at = $2 \
         WHERE role = 'client' AND state IN ('pending', 'active') \
           AND last_seen_at IS NULL AND created_at < $1 RETURNING fingerprint",
        &[&registered_before.unix_millis(), &at.unix_millis()],
    )
    .await?;
    let mut fps = rows
        .iter()
        .map(|r| {
            let f: &str = r.try_get(0).map_err(|_| corrupt("fingerprint"))?;
            ClientFingerprint::parse(f).map_err(|_| corrupt("fingerprint"))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    fps.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(Applied::Clients(fps))
}

pub(super) async fn set_client_state(
    tx: &Tx<'_>,
    fingerprint: &ClientFingerprint,
    state: ClientState,
    at: Timestamp,
) -> TxResult<Applied> {
    let n = exec(
        tx,
        "UPDATE clients SET state = $2, updated_at = $3 WHERE fingerprint = $1",
        &[&fingerprint.as_str(), &state.as_str(), &at.unix_millis()],
    )
    .await?;
    not_found_if_none(n)
}

pub(super) async fn set_client_role(
    tx: &Tx<'_>,
    fingerprint: &ClientFingerprint,
    role: ClientRole,
    at: Timestamp,
) -> TxResult<Applied> {
    let n = exec(
        tx,
        "UPDATE clients SET role = $2, updated_at = $3 WHERE fingerprint = $1",
        &[&fingerprint.as_str(), &role.as_str(), &at.unix_millis()],
    )
    .await?;
    not_found_if_none(n)
}
