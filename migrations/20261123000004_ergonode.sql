-- Ergonode: the App's shared HS256 secret per integration, synchronization records, and
-- the catalog (attributes, categories, products) Ergonode keeps us in sync with.

CREATE TABLE ergonode_settings (
    integration_id  uuid PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    -- Verifies X-APP-TOKEN signatures, so it is stored as given; never returned.
    jwt_secret      text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ergonode_synchronizations (
    integration_id      uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    synchronization_id  uuid NOT NULL,
    status              text NOT NULL CHECK (status IN ('running', 'ended')),
    started_at          timestamptz NOT NULL DEFAULT now(),
    ended_at            timestamptz,
    PRIMARY KEY (integration_id, synchronization_id)
);

CREATE TABLE catalog_items (
    integration_id      uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    kind                text NOT NULL CHECK (kind IN ('attribute', 'category', 'product')),
    resource_id         text NOT NULL,
    resource_type       text NOT NULL,
    -- Our stable id, answered to Ergonode as resource_customs.id.
    our_id              text NOT NULL,
    events              jsonb NOT NULL DEFAULT '[]',
    synchronization_id  uuid,
    -- Arrival order of the event last applied: jobs may run out of order, and an older
    -- event never overwrites a newer one. Deleted items stay as tombstones for that.
    seq                 bigint NOT NULL,
    deleted_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, kind, resource_id)
);

-- Numbers Ergonode events in the order we accepted them.
CREATE SEQUENCE ergonode_event_seq;
