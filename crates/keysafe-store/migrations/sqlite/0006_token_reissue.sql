-- Sequenced tokens that can be issued again (ADR 0006, "Lost answers"). A client that never
-- received the answer carrying its new token presents the token that was replaced; while the
-- new token has not been presented yet, the server answers with the new token again. For that
-- the server derives each token from the keyring (never stores it) and records:
--   token_confirmed    1 once the current token has been presented (then no copy of it is
--                      handed to a replaced token any more), 0 until then;
--   token_kek_version  the keyring version the token key was derived from, and
--   token_salt         the random salt of that derivation; both NULL for a token that cannot
--                      be derived again (random: issued at registration or while sealed).
ALTER TABLE clients ADD COLUMN token_confirmed INTEGER NOT NULL DEFAULT 0
    CHECK (token_confirmed IN (0, 1));
ALTER TABLE clients ADD COLUMN token_kek_version INTEGER CHECK (token_kek_version > 0);
ALTER TABLE clients ADD COLUMN token_salt BLOB;
