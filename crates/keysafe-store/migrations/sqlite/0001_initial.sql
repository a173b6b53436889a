-- keysafe schema, version 1 (SQLite). Timestamps are Unix milliseconds (UTC).
-- Secrets never appear here in the clear: auth secrets are Argon2id hashes, key-encryption keys are
-- wrapped by the seal, data keys are wrapped by the keyring, payloads are AES-256-GCM ciphertext.

CREATE TABLE keyring (
    version     INTEGER PRIMARY KEY,
    wrapped     BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE orgs (
    name        TEXT    PRIMARY KEY,
    contacts    TEXT    NOT NULL,           -- JSON array of e-mail addresses
    auth_mode   TEXT    NOT NULL CHECK (auth_mode IN ('secret', 'approval')),
    auth_hash   TEXT,                       -- Argon2id PHC string; NULL in approval mode
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE clients (
    fingerprint TEXT    PRIMARY KEY,        -- SHA-256 of the SubjectPublicKeyInfo, lowercase hex
    org         TEXT    NOT NULL REFERENCES orgs(name),
    name        TEXT,
    state       TEXT    NOT NULL
                CHECK (state IN ('pending', 'active', 'disabled', 'suspected-clone')),
    role        TEXT    NOT NULL CHECK (role IN ('client', 'admin')),
    cert_der    BLOB    NOT NULL,
    recipient   TEXT,                       -- age X25519 recipient (public key)
    -- Sequenced token (clone detection): SHA-256 hashes only, never the token.
    token_counter    INTEGER NOT NULL DEFAULT 0 CHECK (token_counter >= 0),
    token_hash       TEXT,
    token_recent     TEXT    NOT NULL DEFAULT '[]',  -- JSON: replaced hashes still in grace
    token_rotated_at INTEGER NOT NULL DEFAULT 0,
    last_seen_at     INTEGER,
    state_reason     TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX clients_by_org_state ON clients(org, state);

-- owner: a client fingerprint, or group:ORG/NAME for a deposit owned by a group.
CREATE TABLE deposits (
    owner           TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    org             TEXT    NOT NULL,
    current_version INTEGER NOT NULL CHECK (current_version >= 1),
    current_size    INTEGER NOT NULL CHECK (current_size >= 0),
    deleted         INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    acl_serial      INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (owner, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE deposit_versions (
    owner       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    size        INTEGER NOT NULL CHECK (size >= 0),
    creator     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    encoding    TEXT    NOT NULL DEFAULT 'raw' CHECK (encoding IN ('raw', 'age')),
    kek_version INTEGER NOT NULL,
    wrapped_dek BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    PRIMARY KEY (owner, name, version),
    FOREIGN KEY (owner, name) REFERENCES deposits(owner, name) ON DELETE CASCADE
) STRICT;
