-- Sequenced tokens that can be issued again (ADR 0006, "Lost answers"). A client that never
-- received the answer carrying its new token presents the token that was replaced; while the
-- new token has not been presented yet, the server answers with the new token again. For that
-- the server derives each token from the keyring (never stores it) and records:
--   token_confirmed    true once the current token has been presented (then no copy of it is
--                      handed to a replaced token any more), false until then;
--   token_kek_version  the keyring version the token key was derived from, and
--   token_salt         the random salt of that derivation; both NULL for a token that cannot
--                      be derived again (random: issued at registration or while sealed).
ALTER TABLE clients
    ADD COLUMN token_confirmed   BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN token_kek_version BIGINT CHECK (token_kek_version > 0),
    ADD COLUMN token_salt        BYTEA,
    ADD CONSTRAINT clients_token_derivation_whole
        CHECK ((token_kek_version IS NULL) = (token_salt IS NULL));
