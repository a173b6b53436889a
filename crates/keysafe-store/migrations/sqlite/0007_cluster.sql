-- A cluster of keysafe nodes over one database (docs/adr/0010 to 0012). On SQLite the nodes are
-- processes sharing one file (several `keysafe serve` on one data directory); the tables are the
-- same as on PostgreSQL so that one conformance suite pins both.

-- One row per node, replaced by each of its heartbeats. Not part of the audit chain.
CREATE TABLE cluster_nodes (
    id            TEXT PRIMARY KEY,
    address       TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL,
    seal          TEXT    NOT NULL CHECK (seal IN ('sealed', 'unsealed')),
    sealed_reason TEXT,
    writes_to     TEXT,
    fingerprint   TEXT    NOT NULL
);

-- How many changes that nodes cache were ever committed (client states, the keyring, seal
-- announcements): bumped in the change's own transaction. Nodes poll it to notice changes
-- whose announcement they missed.
CREATE TABLE cluster_changes (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    serial INTEGER NOT NULL CHECK (serial >= 0)
);
INSERT INTO cluster_changes (id, serial) VALUES (1, 0);

-- The cluster's TLS identity: the certificate (public), and its private key sealed under a data
-- key that keyring version `kek_version` wraps (re-wrapped by key rotation like any data key).
CREATE TABLE cluster_identity (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    cert_pem    TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped_dek BLOB    NOT NULL,
    sealed_key  BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Audit entries a node spooled while the database accepted no writes are appended later, one
-- batch per transaction together with its id here: a replay cut short is never appended twice.
CREATE TABLE audit_spool_batches (
    id          TEXT PRIMARY KEY,
    entries     INTEGER NOT NULL,
    first_seq   INTEGER NOT NULL
);
