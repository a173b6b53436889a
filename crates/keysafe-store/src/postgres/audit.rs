//! The audit chain in PostgreSQL. Appends happen only inside a write transaction that holds
//! the row lock on `audit_head` (taken first by every write transaction, see `writer`), so the
//! chain's next `seq` and `prev_hash` are read under the lock and appends from several keysafe
//! nodes on one database are totally ordered (docs/adr/0008-audit-chain-on-postgresql.md).
//! Also the reads of entries, checkpoints, the signing key and the counts metrics need.

use super::errors::store_error;
use super::route::Reads as Pool;
use super::rows::{corrupt, int};
use super::writer::{Tx, TxError, TxResult};
use keysafe_core::store::{AuditHead, AuditKeyRecord, StoreError, StoreResult, StoreStats};
use keysafe_proto::Timestamp;
use keysafe_proto::api::ClientState;
use keysafe_proto::audit::{AuditCheckpoint, AuditEntry, AuditEvent, entry_hash};
use std::sync::{Arc, Mutex};

/// The writer's head, shared with callers of `AuditStore::audit_head`.
pub(crate) type SharedHead = Arc<Mutex<AuditHead>>;

fn uint(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| corrupt(what))
}

fn head_from(row: Option<tokio_postgres::Row>) -> StoreResult<AuditHead> {
    match row {
        Some(r) => {
            let seq: i64 = super::rows::col(&r, "seq")?;
            Ok(AuditHead {
                seq: uint(seq, "audit seq")?,
                hash: super::rows::col(&r, "hash")?,
            })
        }
        None => Ok(AuditHead::genesis()),
    }
}

/// The head as `audit_head` records it, without locking (at open).
pub(crate) async fn load_head(client: &tokio_postgres::Client) -> StoreResult<AuditHead> {
    let row = client
        .query_opt("SELECT seq, hash FROM audit_head", &[])
        .await
        .map_err(store_error)?;
    row.map(Some)
        .ok_or_else(|| StoreError::Corrupt("the audit_head row is missing".into()))
        .and_then(head_from)
}

/// Locks the chain head for this transaction and returns it. Blocks while another transaction
/// (of this node or another) holds it.
pub(crate) async fn lock_head(tx: &Tx<'_>) -> TxResult<AuditHead> {
    let st = tx
        .prepare_cached("SELECT seq, hash FROM audit_head FOR UPDATE")
        .await?;
    let row = tx.query_opt(&st, &[]).await?;
    match row {
        Some(r) => Ok(head_from(Some(r))?),
        None => Err(StoreError::Corrupt("the audit_head row is missing".into()).into()),
    }
}

/// The last entry actually in `audit_log` (`(0, GENESIS)` when empty).
pub(crate) async fn last_logged(tx: &Tx<'_>) -> TxResult<AuditHead> {
    let st = tx
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .await?;
    Ok(head_from(tx.query_opt(&st, &[]).await?)?)
}

/// Records the new head; only ever called by the transaction that holds the lock.
pub(crate) async fn store_head(tx: &Tx<'_>, head: &AuditHead) -> TxResult<()> {
    let st = tx
        .prepare_cached("UPDATE audit_head SET seq = $1, hash = $2")
        .await?;
    tx.execute(&st, &[&int(head.seq), &head.hash]).await?;
    Ok(())
}

/// An insert into `audit_log` that failed: a refused row (a constraint, a trigger) fails the
/// change it records; a retryable or connection failure stays what it is.
fn append_error(e: tokio_postgres::Error) -> TxError {
    match super::errors::classify(&e) {
        super::errors::Class::Statement => StoreError::Unavailable(format!(
            "cannot append to the audit trail: {}",
            store_error(e)
        ))
        .into(),
        _ => TxError::Db(e),
    }
}

const INSERT_ONE: &str = "INSERT INTO audit_log (seq, time, node, request_id, remote, client, org, \
     operation, target, version, outcome, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// Chains `event` after `head`, inserts it, and moves `head` on. Runs inside the change's
/// savepoint, so a failure here rolls back the change the entry records.
pub(crate) async fn append(tx: &Tx<'_>, head: &mut AuditHead, event: &AuditEvent) -> TxResult<()> {
    let seq = head.seq.saturating_add(1);
    let hash = entry_hash(seq, &head.hash, event);
    let st = tx.prepare_cached(INSERT_ONE).await?;
    tx.execute(
        &st,
        &[
            &int(seq),
            &event.time,
            &event.node,
            &event.request_id,
            &event.remote,
            &event.client,
            &event.org,
            &event.operation,
            &event.target,
            &event.version.map(int),
            &event.outcome,
            &head.hash,
            &hash,
        ],
    )
    .await
    .map_err(append_error)?;
    *head = AuditHead { seq, hash };
    Ok(())
}

const INSERT_MANY: &str = "INSERT INTO audit_log (seq, time, node, request_id, remote, client, \
     org, operation, target, version, outcome, prev_hash, hash) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[], \
     $13::text[])";

/// Chains and appends many entries in one statement (one array per column).
pub(crate) async fn append_many(
    tx: &Tx<'_>,
    head: &mut AuditHead,
    events: &[AuditEvent],
) -> TxResult<()> {
    let n = events.len();
    let mut seqs = Vec::with_capacity(n);
    let mut prevs = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut next = head.clone();
    for ev in events {
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
        seqs.push(int(seq));
        prevs.push(prev);
        hashes.push(hash);
    }
    let col = |f: fn(&AuditEvent) -> &str| events.iter().map(f).collect::<Vec<&str>>();
    let opt = |f: fn(&AuditEvent) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
    let times: Vec<i64> = events.iter().map(|e| e.time).collect();
    let versions: Vec<Option<i64>> = events.iter().map(|e| e.version.map(int)).collect();
    let st = tx.prepare_cached(INSERT_MANY).await?;
    tx.execute(
        &st,
        &[
            &seqs,
            &times,
            &col(|e| &e.node),
            &col(|e| &e.request_id),
            &col(|e| &e.remote),
            &opt(|e| e.client.as_deref()),
            &opt(|e| e.org.as_deref()),
            &col(|e| &e.operation),
            &col(|e| &e.target),
            &versions,
            &col(|e| &e.outcome),
            &prevs,
            &hashes,
        ],
    )
    .await
    .map_err(append_error)?;
    *head = next;
    Ok(())
}

pub(crate) async fn insert_key(tx: &Tx<'_>, k: &AuditKeyRecord) -> TxResult<()> {
    let st = tx
        .prepare_cached(
            "INSERT INTO audit_signing_keys (key_id, public_key, kek_version, wrapped, \
             created_at) SELECT $1, $2, $3, $4, $5 \
             WHERE NOT EXISTS (SELECT 1 FROM audit_signing_keys)",
        )
        .await?;
    let n = tx
        .execute(
            &st,
            &[
                &k.key_id,
                &k.public_key,
                &i64::from(k.kek_version),
                &k.wrapped,
                &k.created_at.unix_millis(),
            ],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::AlreadyExists.into());
    }
    Ok(())
}

pub(crate) async fn insert_checkpoint(tx: &Tx<'_>, c: &AuditCheckpoint) -> TxResult<()> {
    let st = tx
        .prepare_cached(
            "INSERT INTO audit_checkpoints (seq, hash, signed_at, key_id, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
        )
        .await?;
    tx.execute(
        &st,
        &[&int(c.seq), &c.hash, &c.signed_at, &c.key_id, &c.signature],
    )
    .await?;
    Ok(())
}

/// Deletes the entries up to a stored checkpoint, keeping the head (see `Mutation::PruneAudit`).
pub(crate) async fn prune(tx: &Tx<'_>, through: u64) -> TxResult<u64> {
    let st = tx
        .prepare_cached(
            "SELECT (SELECT COUNT(*) FROM audit_checkpoints WHERE seq = $1) AS anchor, \
                    (SELECT MAX(seq) FROM audit_log) AS head",
        )
        .await?;
    let row = tx.query_one(&st, &[&int(through)]).await?;
    let anchor: i64 = row.try_get("anchor")?;
    let head: Option<i64> = row.try_get("head")?;
    if anchor == 0 {
        return Err(StoreError::NotFound.into());
    }
    if head.is_none_or(|h| h <= int(through)) {
        return Err(StoreError::InUse(
            "the newest entry is never pruned: prune through an earlier checkpoint".into(),
        )
        .into());
    }
    let st = tx
        .prepare_cached("DELETE FROM audit_log WHERE seq <= $1")
        .await?;
    Ok(tx.execute(&st, &[&int(through)]).await?)
}

// ---- reads ----

pub(crate) async fn entries(
    pool: &Pool,
    from: u64,
    since: Option<Timestamp>,
    limit: u32,
) -> StoreResult<Vec<AuditEntry>> {
    let rows = super::reads::query(
        pool,
        "SELECT seq, time, node, request_id, remote, client, org, operation, target, version, \
         outcome, prev_hash, hash FROM audit_log WHERE seq >= $1 AND time >= $2 \
         ORDER BY seq LIMIT $3",
        &[
            &int(from),
            &since.map(|t| t.unix_millis()).unwrap_or(i64::MIN),
            &i64::from(limit),
        ],
    )
    .await?;
    rows.iter()
        .map(|r| {
            use super::rows::col;
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
        })
        .collect()
}

pub(crate) async fn checkpoints(pool: &Pool, from: u64) -> StoreResult<Vec<AuditCheckpoint>> {
    let rows = super::reads::query(
        pool,
        "SELECT seq, hash, signed_at, key_id, signature FROM audit_checkpoints \
         WHERE seq >= $1 ORDER BY seq",
        &[&int(from)],
    )
    .await?;
    rows.iter()
        .map(|r| {
            use super::rows::col;
            Ok(AuditCheckpoint {
                seq: uint(col(r, "seq")?, "checkpoint seq")?,
                hash: col(r, "hash")?,
                signed_at: col(r, "signed_at")?,
                key_id: col(r, "key_id")?,
                signature: col(r, "signature")?,
            })
        })
        .collect()
}

pub(crate) async fn signing_key(pool: &Pool) -> StoreResult<Option<AuditKeyRecord>> {
    let row = super::reads::query_opt(
        pool,
        "SELECT key_id, public_key, kek_version, wrapped, created_at FROM audit_signing_keys \
         ORDER BY created_at DESC LIMIT 1",
        &[],
    )
    .await?;
    row.map(|r| {
        use super::rows::{col, ts, u32_col};
        Ok(AuditKeyRecord {
            key_id: col(&r, "key_id")?,
            public_key: col(&r, "public_key")?,
            kek_version: u32_col(&r, "kek_version")?,
            wrapped: col(&r, "wrapped")?,
            created_at: ts(&r, "created_at")?,
        })
    })
    .transpose()
}

pub(crate) async fn stats(pool: &Pool) -> StoreResult<StoreStats> {
    use super::rows::col;
    let states = super::reads::query(
        pool,
        "SELECT state, COUNT(*) AS n FROM clients GROUP BY state ORDER BY state COLLATE \"C\"",
        &[],
    )
    .await?;
    let counts = super::reads::query_opt(
        pool,
        "SELECT (SELECT COUNT(*) FROM deposits) AS deposits, \
                (SELECT COUNT(*) FROM deposit_versions) AS versions",
        &[],
    )
    .await?
    .ok_or_else(|| StoreError::Backend("counts returned no row".into()))?;
    let clients_by_state = states
        .iter()
        .map(|r| {
            let s: &str = col(r, "state")?;
            let state = ClientState::parse(s)
                .ok_or_else(|| StoreError::Corrupt(format!("client state {s:?}")))?;
            Ok((state, uint(col(r, "n")?, "count")?))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let status = pool.primary().status();
    Ok(StoreStats {
        clients_by_state,
        deposits: uint(col(&counts, "deposits")?, "count")?,
        deposit_versions: uint(col(&counts, "versions")?, "count")?,
        pool_size: u32::try_from(status.size).unwrap_or(u32::MAX),
        pool_idle: u32::try_from(status.available).unwrap_or(u32::MAX),
    })
}
