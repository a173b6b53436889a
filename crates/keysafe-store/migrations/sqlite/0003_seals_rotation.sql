-- Seals and keyring rotation (issue 5).
-- Each keyring row records the descriptor of the seal that wrapped it (public: kind, KDF
-- parameters and salt, HSM token and key label). A seal migration writes the new rows next to
-- the old ones and deletes the old ones last, so an interruption never loses the keyring.
-- Rows written before this migration were all wrapped by the root key file.

CREATE TABLE keyring_new (
    seal        TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    wrapped     BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (seal, version)
) STRICT;

INSERT INTO keyring_new (seal, version, wrapped, created_at)
    SELECT 'file', version, wrapped, created_at FROM keyring;

DROP TABLE keyring;
ALTER TABLE keyring_new RENAME TO keyring;

-- The re-wrap job looks for data keys on older keyring versions; status counts them per version.
CREATE INDEX deposit_versions_by_kek ON deposit_versions(kek_version);
