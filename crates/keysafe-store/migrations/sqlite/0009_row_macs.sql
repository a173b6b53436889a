-- Authenticated access rows: a MAC (HMAC-SHA256 under a key only a holder of the seal can
-- derive, see docs/adr/0013-authenticated-access-rows.md) over each row's logical identity and
-- the fields that decide access. NULL only on rows written before this migration, until the
-- first start holding the open seal back-fills them and records it in `row_macs_backfill`.
ALTER TABLE orgs ADD COLUMN mac BLOB;
ALTER TABLE clients ADD COLUMN mac BLOB;
ALTER TABLE registration_tokens ADD COLUMN mac BLOB;
ALTER TABLE deposits ADD COLUMN mac BLOB;
ALTER TABLE deposit_grants ADD COLUMN mac BLOB;
ALTER TABLE group_members ADD COLUMN mac BLOB;
ALTER TABLE group_epochs ADD COLUMN mac BLOB;

-- One row once the back-fill completed: from then on a row without a MAC is refused. The row
-- carries its own MAC, so it cannot be forged by someone without the seal.
CREATE TABLE row_macs_backfill (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    completed_at INTEGER NOT NULL,
    mac          BLOB    NOT NULL
) STRICT;
