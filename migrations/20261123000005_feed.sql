-- The changes feed reads the change log in transaction order: each row remembers the
-- transaction that wrote it, and a page only ever includes transactions that have
-- finished (below the oldest one still running), so a cursor never skips a row that
-- commits later.
ALTER TABLE change_log ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX change_log_feed ON change_log (tenant_id, entity, txid, id);

-- Server-side secrets generated once per database (e.g. the key that signs cursors).
CREATE TABLE server_secrets (
    name    text PRIMARY KEY,
    secret  bytea NOT NULL
);
INSERT INTO server_secrets (name, secret) VALUES ('feed_cursor', gen_random_bytes(32));
