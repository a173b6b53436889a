-- Sharing (ACLs), groups with wrapped identities, and one-time registration tokens.
-- Principals are stored as a client fingerprint or group:ORG/NAME.

CREATE TABLE deposit_grants (
    owner       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    grantee     TEXT    NOT NULL,
    access      TEXT    NOT NULL CHECK (access IN ('read', 'write')),
    granted_by  TEXT    NOT NULL,
    granted_at  INTEGER NOT NULL,
    PRIMARY KEY (owner, name, grantee),
    FOREIGN KEY (owner, name) REFERENCES deposits(owner, name) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE INDEX deposit_grants_by_grantee ON deposit_grants(grantee);

CREATE TABLE groups (
    org         TEXT    NOT NULL REFERENCES orgs(name),
    name        TEXT    NOT NULL,
    epoch       INTEGER NOT NULL CHECK (epoch >= 1),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org, name)
) STRICT, WITHOUT ROWID;

-- One age identity per epoch; only its public recipient is here.
CREATE TABLE group_epochs (
    org         TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    recipient   TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (org, name, epoch),
    FOREIGN KEY (org, name) REFERENCES groups(org, name) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE TABLE group_members (
    org         TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    member      TEXT    NOT NULL REFERENCES clients(fingerprint),
    added_at    INTEGER NOT NULL,
    PRIMARY KEY (org, name, member),
    FOREIGN KEY (org, name) REFERENCES groups(org, name) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE INDEX group_members_by_member ON group_members(member);

-- A group identity wrapped (age-encrypted) to one member's recipient: opaque to the server.
CREATE TABLE group_keys (
    org         TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    member      TEXT    NOT NULL,
    wrapped     BLOB    NOT NULL,
    PRIMARY KEY (org, name, member, epoch),
    FOREIGN KEY (org, name, member) REFERENCES group_members(org, name, member) ON DELETE CASCADE,
    FOREIGN KEY (org, name, epoch) REFERENCES group_epochs(org, name, epoch)
) STRICT, WITHOUT ROWID;

-- One-time registration tokens: SHA-256 of the token, never the token.
CREATE TABLE registration_tokens (
    hash        TEXT    PRIMARY KEY,
    org         TEXT    NOT NULL REFERENCES orgs(name),
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     TEXT
) STRICT, WITHOUT ROWID;
