-- keysafe schema, version 1 (PostgreSQL): the same tables and checks as SQLite's migrations
-- 0001-0005 together, in PostgreSQL's types. Timestamps are Unix milliseconds (UTC) in BIGINT.
-- Secrets never appear here in the clear: auth secrets are Argon2id hashes, key-encryption keys
-- are wrapped by the seal, data keys are wrapped by the keyring, payloads are AES-256-GCM
-- ciphertext, tokens are SHA-256 hashes.
--
-- Every TEXT column that is compared, ordered or used as a key is COLLATE "C": names compare
-- as bytes whatever collation the database was created with (an ICU or glibc locale orders
-- 'a_b' and 'aB' differently, and listing by prefix and pagination must not depend on it).

-- One keyring row per (seal, version): a seal migration writes the new rows beside the old
-- ones and deletes the old ones last, so an interruption never loses the keyring.
CREATE TABLE keyring (
    seal        TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL CHECK (version >= 1),
    wrapped     BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (seal, version)
);

CREATE TABLE orgs (
    name        TEXT COLLATE "C" PRIMARY KEY,
    contacts    TEXT   NOT NULL,                -- JSON array of e-mail addresses
    auth_mode   TEXT   NOT NULL CHECK (auth_mode IN ('secret', 'approval')),
    auth_hash   TEXT,                           -- Argon2id PHC string; NULL in approval mode
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE clients (
    fingerprint TEXT COLLATE "C" PRIMARY KEY,   -- SHA-256 of the SubjectPublicKeyInfo, hex
    org         TEXT COLLATE "C" NOT NULL REFERENCES orgs(name),
    name        TEXT COLLATE "C",
    state       TEXT   NOT NULL
                CHECK (state IN ('pending', 'active', 'disabled', 'suspected-clone')),
    role        TEXT   NOT NULL CHECK (role IN ('client', 'admin')),
    cert_der    BYTEA  NOT NULL,
    recipient   TEXT,                           -- age X25519 recipient (public key)
    -- Sequenced token (clone detection): SHA-256 hashes only, never the token.
    token_counter    BIGINT NOT NULL DEFAULT 0 CHECK (token_counter >= 0),
    token_hash       TEXT,
    token_recent     TEXT   NOT NULL DEFAULT '[]',  -- JSON: replaced hashes still in grace
    token_rotated_at BIGINT NOT NULL DEFAULT 0,
    last_seen_at     BIGINT,
    state_reason     TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX clients_by_org_state ON clients (org, state);

-- owner: a client fingerprint, or group:ORG/NAME for a deposit owned by a group.
CREATE TABLE deposits (
    owner           TEXT COLLATE "C" NOT NULL,
    name            TEXT COLLATE "C" NOT NULL,
    org             TEXT COLLATE "C" NOT NULL,
    current_version BIGINT  NOT NULL CHECK (current_version >= 1),
    current_size    BIGINT  NOT NULL CHECK (current_size >= 0),
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    acl_serial      BIGINT  NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    PRIMARY KEY (owner, name)
);

CREATE TABLE deposit_versions (
    owner       TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL CHECK (version >= 1),
    size        BIGINT NOT NULL CHECK (size >= 0),
    creator     TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    encoding    TEXT   NOT NULL DEFAULT 'raw' CHECK (encoding IN ('raw', 'age')),
    kek_version BIGINT NOT NULL,
    wrapped_dek BYTEA  NOT NULL,
    ciphertext  BYTEA  NOT NULL,
    PRIMARY KEY (owner, name, version),
    FOREIGN KEY (owner, name) REFERENCES deposits (owner, name) ON DELETE CASCADE
);

-- The re-wrap job looks for data keys on older keyring versions; status counts them per version.
CREATE INDEX deposit_versions_by_kek ON deposit_versions (kek_version);

-- Sharing (ACLs). Principals are stored as a client fingerprint or group:ORG/NAME.
CREATE TABLE deposit_grants (
    owner       TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    grantee     TEXT COLLATE "C" NOT NULL,
    access      TEXT   NOT NULL CHECK (access IN ('read', 'write')),
    granted_by  TEXT COLLATE "C" NOT NULL,
    granted_at  BIGINT NOT NULL,
    PRIMARY KEY (owner, name, grantee),
    FOREIGN KEY (owner, name) REFERENCES deposits (owner, name) ON DELETE CASCADE
);

CREATE INDEX deposit_grants_by_grantee ON deposit_grants (grantee);

CREATE TABLE groups (
    org         TEXT COLLATE "C" NOT NULL REFERENCES orgs(name),
    name        TEXT COLLATE "C" NOT NULL,
    epoch       BIGINT NOT NULL CHECK (epoch >= 1),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (org, name)
);

-- One age identity per epoch; only its public recipient is here.
CREATE TABLE group_epochs (
    org         TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    epoch       BIGINT NOT NULL,
    recipient   TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org, name, epoch),
    FOREIGN KEY (org, name) REFERENCES groups (org, name) ON DELETE CASCADE
);

CREATE TABLE group_members (
    org         TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    member      TEXT COLLATE "C" NOT NULL REFERENCES clients(fingerprint),
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (org, name, member),
    FOREIGN KEY (org, name) REFERENCES groups (org, name) ON DELETE CASCADE
);

CREATE INDEX group_members_by_member ON group_members (member);

-- A group identity wrapped (age-encrypted) to one member's recipient: opaque to the server.
CREATE TABLE group_keys (
    org         TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    epoch       BIGINT NOT NULL,
    member      TEXT COLLATE "C" NOT NULL,
    wrapped     BYTEA  NOT NULL,
    PRIMARY KEY (org, name, member, epoch),
    FOREIGN KEY (org, name, member) REFERENCES group_members (org, name, member)
        ON DELETE CASCADE,
    FOREIGN KEY (org, name, epoch) REFERENCES group_epochs (org, name, epoch)
);

-- One-time registration tokens: SHA-256 of the token, never the token.
CREATE TABLE registration_tokens (
    hash        TEXT COLLATE "C" PRIMARY KEY,
    org         TEXT COLLATE "C" NOT NULL REFERENCES orgs(name),
    created_by  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    used_by     TEXT
);

-- The tamper-evident audit trail (docs/audit.md): `hash` is SHA-256 over the canonical JSON of
-- every other column of the row, including `prev_hash`. Rows are only ever appended.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY CHECK (seq >= 1),
    time        BIGINT NOT NULL,                -- Unix milliseconds (UTC)
    node        TEXT   NOT NULL,
    request_id  TEXT   NOT NULL,
    remote      TEXT   NOT NULL,
    client      TEXT,                           -- certificate fingerprint, if one was presented
    org         TEXT,
    operation   TEXT   NOT NULL,                -- METHOD ROUTE
    target      TEXT   NOT NULL,                -- request path without the query
    version     BIGINT,                         -- deposit version read or written
    outcome     TEXT   NOT NULL,                -- ok, or the error code
    prev_hash   TEXT   NOT NULL,
    hash        TEXT   NOT NULL
);

CREATE INDEX audit_log_by_time ON audit_log (time);

-- The head of the chain: exactly one row. Every transaction that appends locks it first
-- (SELECT ... FOR UPDATE), so appends from several keysafe nodes are totally ordered
-- (docs/adr/0008-audit-chain-on-postgresql.md). keysafe inserts the genesis row at open.
CREATE TABLE audit_head (
    id          BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    seq         BIGINT NOT NULL CHECK (seq >= 0),
    hash        TEXT   NOT NULL
);

-- Signed heads of the chain.
CREATE TABLE audit_checkpoints (
    seq         BIGINT PRIMARY KEY,
    hash        TEXT   NOT NULL,
    signed_at   BIGINT NOT NULL,
    key_id      TEXT   NOT NULL,
    signature   TEXT   NOT NULL
);

-- The Ed25519 key that signs checkpoints: its seed wrapped by keyring version `kek_version`.
-- Key rotation re-wraps it like any kek-wrapped row.
CREATE TABLE audit_signing_keys (
    key_id      TEXT COLLATE "C" PRIMARY KEY,  -- hex SHA-256 of the public key
    public_key  BYTEA  NOT NULL,
    kek_version BIGINT NOT NULL,
    wrapped     BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL
);
