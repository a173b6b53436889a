-- The trail is read by seq (its rowid), the time bound only filtering: no query ever used this
-- index, and every appended entry paid an insert into it (a second B-tree, its pages in every
-- commit and checkpoint).
DROP INDEX IF EXISTS audit_log_by_time;
