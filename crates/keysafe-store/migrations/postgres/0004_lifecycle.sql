-- Lifecycle reads from indexes: pages of the client listing (ordered by organisation,
-- registration time, fingerprint) and an organisation's registration tokens (listed, revoked,
-- and deleted with the organisation, whose foreign key check looks them up by organisation).
CREATE INDEX clients_by_listing ON clients (org, created_at, fingerprint);
CREATE INDEX registration_tokens_by_org ON registration_tokens (org, created_at);
