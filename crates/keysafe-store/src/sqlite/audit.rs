//! The audit chain in SQLite: appending entries (only ever from the writer, inside its write
//! transaction, which holds the head of the chain and so gives every entry its place), and
//! reading entries, checkpoints, the signing key and the counts metrics need.

use super::conn::{all, backend_error, exec, one};
use super::rows::{at, col};
use keysafe_core::store::{AuditHead, AuditKeyRecord, StoreError, StoreResult, StoreStats};
use keysafe_proto::Timestamp;
use keysafe_proto::api::ClientState;
use keysafe_proto::audit::{AuditCheckpoint, AuditEntry, AuditEvent, entry_hash};
use rusqlite::{Connection, params};
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
pub(crate) fn load_head(conn: &Connection) -> StoreResult<AuditHead> {
    let row = one(
        conn,
        "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((at::<i64>(r, 0)?, at::<String>(r, 1)?)),
    )?;
    match row {
        Some((seq, hash)) => Ok(AuditHead {
            seq: uint(seq, "audit seq")?,
            hash,
        }),
        None => Ok(AuditHead::genesis()),
    }
}

const INSERT_ENTRY: &str = "INSERT INTO audit_log (seq, time, node, request_id, remote, client, \
     org, operation, target, version, outcome, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

fn append_error(err: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot append to the audit trail: {err}"))
}

/// Chains `event` after `head`, inserts it with `insert` (the prepared [`INSERT_ENTRY`]), and
/// moves `head` on.
fn insert_entry(
    insert: &mut rusqlite::Statement<'_>,
    head: &mut AuditHead,
    event: &AuditEvent,
) -> StoreResult<()> {
    let seq = head.seq.saturating_add(1);
    let hash = entry_hash(seq, &head.hash, event);
    insert
        .execute(params![
            int(seq),
            event.time,
            event.node,
            event.request_id,
            event.remote,
            event.client,
            event.org,
            event.operation,
            event.target,
            event.version.map(int),
            event.outcome,
            head.hash,
            hash,
        ])
        .map_err(append_error)?;
    *head = AuditHead { seq, hash };
    Ok(())
}

/// Chains `event` after `head`, inserts it, and moves `head` on. Runs inside the writer's
/// savepoint, so a failure here rolls back the change the entry records.
pub(crate) fn append(
    conn: &Connection,
    head: &mut AuditHead,
    event: &AuditEvent,
) -> StoreResult<()> {
    let mut insert = conn.prepare_cached(INSERT_ENTRY).map_err(append_error)?;
    insert_entry(&mut insert, head, event)
}

/// Chains and appends many entries, in order, through one prepared statement; `head` moves
/// only when every one was inserted.
pub(crate) fn append_many(
    conn: &Connection,
    head: &mut AuditHead,
    events: &[AuditEvent],
) -> StoreResult<()> {
    let mut insert = conn.prepare_cached(INSERT_ENTRY).map_err(append_error)?;
    let mut next = head.clone();
    for ev in events {
        insert_entry(&mut insert, &mut next, ev)?;
    }
    *head = next;
    Ok(())
}

pub(crate) fn insert_key(conn: &Connection, k: &AuditKeyRecord) -> StoreResult<()> {
    let n = exec(
        conn,
        "INSERT INTO audit_signing_keys (key_id, public_key, kek_version, wrapped, created_at) \
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM audit_signing_keys)",
        params![
            k.key_id,
            k.public_key,
            i64::from(k.kek_version),
            k.wrapped,
            k.created_at.unix_millis()
        ],
    )?;
    if n == 0 {
        return Err(StoreError::AlreadyExists);
    }
    Ok(())
}

pub(crate) fn insert_checkpoint(conn: &Connection, c: &AuditCheckpoint) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO audit_checkpoints (seq, hash, signed_at, key_id, signature) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (seq) DO NOTHING",
        params![int(c.seq), c.hash, c.signed_at, c.key_id, c.signature],
    )
    .map(|_| ())
}

/// Deletes the entries up to a stored checkpoint, keeping the head (see `Mutation::PruneAudit`).
pub(crate) fn prune(conn: &Connection, through: u64) -> StoreResult<u64> {
    let (anchor, head) = one(
        conn,
        "SELECT (SELECT COUNT(*) FROM audit_checkpoints WHERE seq = ?1), \
                (SELECT MAX(seq) FROM audit_log)",
        [int(through)],
        |r| Ok((at::<i64>(r, 0)?, at::<Option<i64>>(r, 1)?)),
    )?
    .unwrap_or((0, None));
    if anchor == 0 {
        return Err(StoreError::NotFound);
    }
    if head.is_none_or(|h| h <= int(through)) {
        return Err(StoreError::InUse(
            "the newest entry is never pruned: prune through an earlier checkpoint".into(),
        ));
    }
    let n = conn
        .prepare_cached("DELETE FROM audit_log WHERE seq <= ?1")
        .and_then(|mut st| st.execute([int(through)]))
        .map_err(backend_error)?;
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

pub(crate) fn entries(
    conn: &Connection,
    from: u64,
    since: Option<Timestamp>,
    limit: u32,
) -> StoreResult<Vec<AuditEntry>> {
    all(
        conn,
        "SELECT seq, time, node, request_id, remote, client, org, operation, target, version, \
         outcome, prev_hash, hash FROM audit_log WHERE seq >= ?1 AND time >= ?2 \
         ORDER BY seq LIMIT ?3",
        params![
            int(from),
            since.map(|t| t.unix_millis()).unwrap_or(i64::MIN),
            i64::from(limit)
        ],
        |r| {
            Ok(AuditEntry {
                seq: uint(col(r, "seq")?, "audit seq")?,
                prev_hash: col(r, "prev_hash")?,
                hash: col(r, "hash")?,
                event: AuditEvent {
                    time: col(r, "time")?,
                    node: col(r, "node")?,
                    request_id: col(r, "request_id")?,
                    remote: col(r, "remote")?,
                    client: col(r, "client")?,
                    org: col(r, "org")?,
                    operation: col(r, "operation")?,
                    target: col(r, "target")?,
                    version: col::<Option<i64>>(r, "version")?
                        .map(|v| uint(v, "audit version"))
                        .transpose()?,
                    outcome: col(r, "outcome")?,
                },
            })
        },
    )
}

pub(crate) fn checkpoints(conn: &Connection, from: u64) -> StoreResult<Vec<AuditCheckpoint>> {
    all(
        conn,
        "SELECT seq, hash, signed_at, key_id, signature FROM audit_checkpoints \
         WHERE seq >= ?1 ORDER BY seq",
        [int(from)],
        |r| {
            Ok(AuditCheckpoint {
                seq: uint(at(r, 0)?, "checkpoint seq")?,
                hash: at(r, 1)?,
                signed_at: at(r, 2)?,
                key_id: at(r, 3)?,
                signature: at(r, 4)?,
            })
        },
    )
}

pub(crate) fn signing_key(conn: &Connection) -> StoreResult<Option<AuditKeyRecord>> {
    one(
        conn,
        "SELECT key_id, public_key, kek_version, wrapped, created_at FROM audit_signing_keys \
         ORDER BY created_at DESC LIMIT 1",
        [],
        |r| {
            Ok(AuditKeyRecord {
                key_id: at(r, 0)?,
                public_key: at(r, 1)?,
                kek_version: u32::try_from(at::<i64>(r, 2)?)
                    .map_err(|_| StoreError::Corrupt("audit key kek_version".into()))?,
                wrapped: at(r, 3)?,
                created_at: Timestamp::from_unix_millis(at(r, 4)?),
            })
        },
    )
}

/// Counts for metrics; the pool figures are filled in by the caller.
pub(crate) fn stats(conn: &Connection) -> StoreResult<StoreStats> {
    let states = all(
        conn,
        "SELECT state, COUNT(*) FROM clients GROUP BY state ORDER BY state",
        [],
        |r| {
            let s: String = at(r, 0)?;
            let state = ClientState::parse(&s)
                .ok_or_else(|| StoreError::Corrupt(format!("client state {s:?}")))?;
            Ok((state, uint(at(r, 1)?, "count")?))
        },
    )?;
    let count = |sql: &str| -> StoreResult<u64> {
        conn.prepare_cached(sql)
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
            .map_err(backend_error)
            .and_then(|n| uint(n, "count"))
    };
    Ok(StoreStats {
        clients_by_state: states,
        deposits: count("SELECT COUNT(*) FROM deposits")?,
        deposit_versions: count("SELECT COUNT(*) FROM deposit_versions")?,
        pool_size: 0,
        pool_idle: 0,
    })
}
