//! The audit chain in SQLite: appending entries (only ever from the writer, inside its write
//! transaction, which holds the head of the chain and so gives every entry its place), and
//! reading entries, checkpoints, the signing key and the counts metrics need.

use super::backend_error;
use keysafe_core::store::{AuditHead, AuditKeyRecord, StoreError, StoreResult, StoreStats};
use keysafe_proto::Timestamp;
use keysafe_proto::api::ClientState;
use keysafe_proto::audit::{AuditCheckpoint, AuditEntry, AuditEvent, entry_hash};
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::sync::{Arc, Mutex};

/// The writer's head, shared with callers of `AuditStore::audit_head`.
pub(crate) type SharedHead = Arc<Mutex<AuditHead>>;

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(what.into()))
}

/// The last entry in the database. The writer calls it only inside its write transaction.
pub(crate) async fn load_head(conn: &mut SqliteConnection) -> StoreResult<AuditHead> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend_error)?;
    match row {
        Some((seq, hash)) => Ok(AuditHead {
            seq: uint(seq, "audit seq")?,
            hash,
        }),
        None => Ok(AuditHead::genesis()),
    }
}

/// Chains `event` after `head`, inserts it, and moves `head` on. Runs inside the writer's
/// savepoint, so a failure here rolls back the change the entry records.
pub(crate) async fn append(
    conn: &mut SqliteConnection,
    head: &mut AuditHead,
    event: &AuditEvent,
) -> StoreResult<()> {
    let seq = head.seq.saturating_add(1);
    let hash = entry_hash(seq, &head.hash, event);
    sqlx::query(
        "INSERT INTO audit_log (seq, time, node, request_id, remote, client, org, operation, \
         target, version, outcome, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .bind(int(seq))
    .bind(event.time)
    .bind(event.node.as_str())
    .bind(event.request_id.as_str())
    .bind(event.remote.as_str())
    .bind(event.client.as_deref())
    .bind(event.org.as_deref())
    .bind(event.operation.as_str())
    .bind(event.target.as_str())
    .bind(event.version.map(int))
    .bind(event.outcome.as_str())
    .bind(head.hash.as_str())
    .bind(hash.as_str())
    .execute(&mut *conn)
    .await
    .map_err(|err| StoreError::Unavailable(format!("cannot append to the audit trail: {err}")))?;
    *head = AuditHead { seq, hash };
    Ok(())
}

/// Rows per multi-row INSERT (13 parameters each; SQLite allows 32766).
const ROWS_PER_INSERT: usize = 64;

/// Chains and appends many entries with multi-row INSERTs: one statement per 64 entries instead
/// of one each (every statement is a hand-off to the driver's thread).
pub(crate) async fn append_many(
    conn: &mut SqliteConnection,
    head: &mut AuditHead,
    events: &[AuditEvent],
) -> StoreResult<()> {
    let mut next = head.clone();
    for chunk in events.chunks(ROWS_PER_INSERT) {
        // Chain fields first (each hash needs the one before), then bind the events borrowed.
        let mut chain: Vec<(u64, String, String)> = Vec::with_capacity(chunk.len());
        for ev in chunk {
            let seq = next.seq.saturating_add(1);
            let hash = entry_hash(seq, &next.hash, ev);
            let prev = std::mem::replace(
                &mut next,
                AuditHead {
                    seq,
                    hash: hash.clone(),
                },
            )
            .hash;
            chain.push((seq, prev, hash));
        }
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO audit_log (seq, time, node, request_id, remote, client, org, operation, \
             target, version, outcome, prev_hash, hash) ",
        );
        q.push_values(
            chunk.iter().zip(chain.iter()),
            |mut b, (ev, (seq, prev, hash))| {
                b.push_bind(int(*seq))
                    .push_bind(ev.time)
                    .push_bind(ev.node.as_str())
                    .push_bind(ev.request_id.as_str())
                    .push_bind(ev.remote.as_str())
                    .push_bind(ev.client.as_deref())
                    .push_bind(ev.org.as_deref())
                    .push_bind(ev.operation.as_str())
                    .push_bind(ev.target.as_str())
                    .push_bind(ev.version.map(int))
                    .push_bind(ev.outcome.as_str())
                    .push_bind(prev.as_str())
                    .push_bind(hash.as_str());
            },
        );
        q.build().execute(&mut *conn).await.map_err(|err| {
            StoreError::Unavailable(format!("cannot append to the audit trail: {err}"))
        })?;
    }
    *head = next;
    Ok(())
}

pub(crate) async fn insert_key(conn: &mut SqliteConnection, k: &AuditKeyRecord) -> StoreResult<()> {
    let r = sqlx::query(
        "INSERT INTO audit_signing_keys (key_id, public_key, kek_version, wrapped, created_at) \
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM audit_signing_keys)",
    )
    .bind(&k.key_id)
    .bind(&k.public_key)
    .bind(i64::from(k.kek_version))
    .bind(&k.wrapped)
    .bind(k.created_at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(backend_error)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists);
    }
    Ok(())
}

pub(crate) async fn insert_checkpoint(
    conn: &mut SqliteConnection,
    c: &AuditCheckpoint,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, hash, signed_at, key_id, signature) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (seq) DO NOTHING",
    )
    .bind(int(c.seq))
    .bind(&c.hash)
    .bind(c.signed_at)
    .bind(&c.key_id)
    .bind(&c.signature)
    .execute(&mut *conn)
    .await
    .map_err(backend_error)?;
    Ok(())
}

pub(crate) async fn entries(
    pool: &SqlitePool,
    from: u64,
    since: Option<Timestamp>,
    limit: u32,
) -> StoreResult<Vec<AuditEntry>> {
    let rows = sqlx::query(
        "SELECT seq, time, node, request_id, remote, client, org, operation, target, version, \
         outcome, prev_hash, hash FROM audit_log WHERE seq >= ?1 AND time >= ?2 \
         ORDER BY seq LIMIT ?3",
    )
    .bind(int(from))
    .bind(since.map(|t| t.unix_millis()).unwrap_or(i64::MIN))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(backend_error)?;
    rows.iter()
        .map(|r| {
            let get = |e: sqlx::Error| StoreError::Corrupt(format!("audit row: {e}"));
            Ok(AuditEntry {
                seq: uint(r.try_get("seq").map_err(get)?, "audit seq")?,
                prev_hash: r.try_get("prev_hash").map_err(get)?,
                hash: r.try_get("hash").map_err(get)?,
                event: AuditEvent {
                    time: r.try_get("time").map_err(get)?,
                    node: r.try_get("node").map_err(get)?,
                    request_id: r.try_get("request_id").map_err(get)?,
                    remote: r.try_get("remote").map_err(get)?,
                    client: r.try_get("client").map_err(get)?,
                    org: r.try_get("org").map_err(get)?,
                    operation: r.try_get("operation").map_err(get)?,
                    target: r.try_get("target").map_err(get)?,
                    version: r
                        .try_get::<Option<i64>, _>("version")
                        .map_err(get)?
                        .map(|v| uint(v, "audit version"))
                        .transpose()?,
                    outcome: r.try_get("outcome").map_err(get)?,
                },
            })
        })
        .collect()
}

pub(crate) async fn checkpoints(pool: &SqlitePool, from: u64) -> StoreResult<Vec<AuditCheckpoint>> {
    let rows: Vec<(i64, String, i64, String, String)> = sqlx::query_as(
        "SELECT seq, hash, signed_at, key_id, signature FROM audit_checkpoints \
         WHERE seq >= ?1 ORDER BY seq",
    )
    .bind(int(from))
    .fetch_all(pool)
    .await
    .map_err(backend_error)?;
    rows.into_iter()
        .map(|(seq, hash, signed_at, key_id, signature)| {
            Ok(AuditCheckpoint {
                seq: uint(seq, "checkpoint seq")?,
                hash,
                signed_at,
                key_id,
                signature,
            })
        })
        .collect()
}

type KeyRow = (String, Vec<u8>, i64, Vec<u8>, i64);

pub(crate) async fn signing_key(pool: &SqlitePool) -> StoreResult<Option<AuditKeyRecord>> {
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT key_id, public_key, kek_version, wrapped, created_at FROM audit_signing_keys \
         ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .map_err(backend_error)?;
    row.map(|(key_id, public_key, kek, wrapped, at)| {
        Ok(AuditKeyRecord {
            key_id,
            public_key,
            kek_version: u32::try_from(kek)
                .map_err(|_| StoreError::Corrupt("audit key kek_version".into()))?,
            wrapped,
            created_at: Timestamp::from_unix_millis(at),
        })
    })
    .transpose()
}

pub(crate) async fn stats(pool: &SqlitePool) -> StoreResult<StoreStats> {
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM clients GROUP BY state ORDER BY state")
            .fetch_all(pool)
            .await
            .map_err(backend_error)?;
    let (deposits,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM deposits")
        .fetch_one(pool)
        .await
        .map_err(backend_error)?;
    let (versions,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM deposit_versions")
        .fetch_one(pool)
        .await
        .map_err(backend_error)?;
    let clients_by_state = states
        .into_iter()
        .map(|(s, n)| {
            let state = ClientState::parse(&s)
                .ok_or_else(|| StoreError::Corrupt(format!("client state {s:?}")))?;
            Ok((state, uint(n, "count")?))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(StoreStats {
        clients_by_state,
        deposits: uint(deposits, "count")?,
        deposit_versions: uint(versions, "count")?,
        pool_size: pool.size(),
        pool_idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
    })
}
