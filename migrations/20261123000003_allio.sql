-- ALLIO → CRM. Table names and meanings follow the ALLIO technical task (seed 003).

-- Per-integration ALLIO settings. The integration's token (credentials) is the secret
-- in its webhook URL. The API key is presented to ALLIO, so it is stored as given and
-- never returned by the API.
CREATE TABLE allio_settings (
    integration_id    uuid PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    integration_uuid  uuid NOT NULL UNIQUE,
    api_base_url      text NOT NULL,
    api_key           text NOT NULL,
    active            boolean NOT NULL DEFAULT true,
    delete_sync       boolean NOT NULL DEFAULT false,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE allio_webhook (
    id                  bigserial PRIMARY KEY,
    integration_id      uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    integration_uuid    uuid NOT NULL,
    command             text NOT NULL,
    -- The body's `indexes` as a JSON array string, e.g. "[111,222]".
    external_ids_array  text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    processed_at        timestamptz,
    -- Commands we do not act on (e.g. SPACE_CHANGED) are kept and marked ignored.
    ignored             boolean NOT NULL DEFAULT false
);

-- status: 0 new, 1 processing, 2 done, 3 error.
CREATE TABLE allio_tasks (
    id              bigserial PRIMARY KEY,
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    webhook_id      bigint NOT NULL REFERENCES allio_webhook (id) ON DELETE CASCADE,
    part            integer NOT NULL,
    command         text NOT NULL,
    entity          text NOT NULL CHECK (entity IN ('reserve', 'dealcard')),
    external_ids    text NOT NULL,
    status          smallint NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 3),
    error           text,
    claimed_by      text,
    claimed_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, part)
);
CREATE INDEX allio_tasks_pending ON allio_tasks (integration_id, status, command);

-- CRM schema: contacts, reservations and deals, upserted by (integration, external_id).
CREATE TABLE crm_contacts (
    id              uuid PRIMARY KEY,
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    external_id     text NOT NULL,
    phone           text,
    custom_fields   jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (integration_id, external_id)
);

CREATE TABLE crm_reservations (
    id              uuid PRIMARY KEY,
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    external_id     text NOT NULL,
    created_at      timestamptz,
    contact_id      uuid REFERENCES crm_contacts (id) ON DELETE SET NULL,
    custom_fields   jsonb NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (integration_id, external_id)
);

CREATE TABLE crm_deals (
    id              uuid PRIMARY KEY,
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    external_id     text NOT NULL,
    created_at      timestamptz,
    contact_id      uuid REFERENCES crm_contacts (id) ON DELETE SET NULL,
    custom_fields   jsonb NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (integration_id, external_id)
);

-- Shared rate limiters (GCRA): the theoretical arrival time of the next request per key,
-- e.g. `allio:<egress ip>`. One row lock serialises every worker process.
CREATE TABLE rate_limits (
    key  text PRIMARY KEY,
    tat  timestamptz NOT NULL DEFAULT now()
);
