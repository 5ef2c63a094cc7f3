-- Outbound webhooks of the changes feed (eShip style): per-tenant subscriptions that
-- receive the change log in order, with ok/retry/stop states.

CREATE TABLE webhooks (
    id              bigserial PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url             text NOT NULL,
    entities        text[] NOT NULL,
    fields          text[] NOT NULL DEFAULT '{}',
    metadata        text NOT NULL DEFAULT '',
    -- Standard Webhooks signing secret (`whsec_...`); returned once, at creation.
    secret          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    state           text NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'retry', 'stop')),
    last_sent_at    timestamptz,
    last_error      jsonb,
    -- Delivered up to this change-log position (see the changes feed).
    position_txid   xid8 NOT NULL DEFAULT pg_snapshot_xmin(pg_current_snapshot()),
    position_id     bigint NOT NULL DEFAULT 0,
    -- Held by the one delivery in flight.
    lease_until     timestamptz,
    deleted_at      timestamptz
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id) WHERE deleted_at IS NULL;

CREATE TABLE webhook_attempts (
    id           bigserial PRIMARY KEY,
    webhook_id   bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    sent_at      timestamptz NOT NULL,
    duration_ms  integer NOT NULL,
    changes      integer NOT NULL,
    resp_status  integer,
    resp_body    text,
    error        text
);
CREATE INDEX webhook_attempts_webhook ON webhook_attempts (webhook_id, id);

-- Every change queues a delivery for the webhooks it concerns, in the same transaction
-- (one waiting `webhook.deliver` job per webhook: apalis's de-duplication key).
CREATE FUNCTION queue_webhook_deliveries() RETURNS trigger AS $$
BEGIN
    INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
    SELECT apalis.generate_ulid(), 'webhook.deliver',
           convert_to(json_build_object('v', 1, 'payload', json_build_object('webhook_id', w.id))::text, 'UTF8'),
           'Pending', 0, 12, now(), 0, w.id::text
    FROM webhooks w
    WHERE w.deleted_at IS NULL AND w.state <> 'stop'
      AND EXISTS (SELECT 1 FROM inserted i WHERE i.tenant_id = w.tenant_id AND i.entity = ANY (w.entities))
    ON CONFLICT (job_type, idempotency_key) DO NOTHING;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER change_log_webhooks AFTER INSERT ON change_log
REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION queue_webhook_deliveries();
