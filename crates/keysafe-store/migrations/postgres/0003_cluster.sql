-- A cluster of keysafe nodes over one database (docs/adr/0010 to 0012): node heartbeats, the
-- change serial that backs the change announcements, the cluster's TLS identity, and the
-- batches of audit entries nodes spooled while only a standby was reachable.

-- One row per node, replaced by each of its heartbeats. Not part of the audit chain (written
-- by the writer like any change, but nothing orders against it).
CREATE TABLE cluster_nodes (
    id            TEXT COLLATE "C" PRIMARY KEY,
    address       TEXT   NOT NULL,
    version       TEXT   NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL,
    seal          TEXT   NOT NULL CHECK (seal IN ('sealed', 'unsealed')),
    sealed_reason TEXT,
    writes_to     TEXT,
    fingerprint   TEXT   NOT NULL
);

-- How many changes that nodes cache were ever committed (client states, the keyring, seal
-- announcements): bumped in the change's own transaction, which also NOTIFYs
-- keysafe_changes with 'SERIAL CHANGE'. Nodes poll it to notice announcements they missed.
CREATE TABLE cluster_changes (
    id     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    serial BIGINT NOT NULL CHECK (serial >= 0)
);
INSERT INTO cluster_changes (id, serial) VALUES (TRUE, 0);

-- The cluster's TLS identity: the certificate (public), and its private key sealed under a data
-- key that keyring version `kek_version` wraps (re-wrapped by key rotation like any data key).
CREATE TABLE cluster_identity (
    id          BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    cert_pem    TEXT   NOT NULL,
    fingerprint TEXT COLLATE "C" NOT NULL,
    kek_version BIGINT NOT NULL,
    wrapped_dek BYTEA  NOT NULL,
    sealed_key  BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Audit entries a node spooled while the database accepted no writes are appended later, one
-- batch per transaction together with its id here: a replay cut short is never appended twice.
CREATE TABLE audit_spool_batches (
    id          TEXT COLLATE "C" PRIMARY KEY,
    entries     BIGINT NOT NULL,
    first_seq   BIGINT NOT NULL
);
