-- The tamper-evident audit trail (issue 6). Entries form a hash chain (docs/audit.md): `hash` is
-- SHA-256 over the canonical JSON of every other column of the row, including `prev_hash`.
-- Only the single writer appends here; nothing updates or deletes rows.

CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY CHECK (seq >= 1),
    time        INTEGER NOT NULL,            -- Unix milliseconds (UTC)
    node        TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    remote      TEXT    NOT NULL,
    client      TEXT,                        -- certificate fingerprint, if one was presented
    org         TEXT,
    operation   TEXT    NOT NULL,            -- METHOD ROUTE
    target      TEXT    NOT NULL,            -- request path without the query
    version     INTEGER,                     -- deposit version read or written
    outcome     TEXT    NOT NULL,            -- ok, or the error code
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
) STRICT;

CREATE INDEX audit_log_by_time ON audit_log(time);

-- Signed heads of the chain.
CREATE TABLE audit_checkpoints (
    seq         INTEGER PRIMARY KEY,
    hash        TEXT    NOT NULL,
    signed_at   INTEGER NOT NULL,
    key_id      TEXT    NOT NULL,
    signature   TEXT    NOT NULL
) STRICT;

-- The Ed25519 key that signs checkpoints: its seed wrapped by keyring version `kek_version`
-- (AES-256-GCM, associated data keysafe/audit-signing-key/v1 + public key). Key rotation
-- re-wraps it like any kek-wrapped row.
CREATE TABLE audit_signing_keys (
    key_id      TEXT    PRIMARY KEY,         -- hex SHA-256 of the public key
    public_key  BLOB    NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped     BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
