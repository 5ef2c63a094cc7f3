-- Favourites: one store for IMSHOP and Conference Compass, per tenant.

CREATE TABLE favourite_users (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id       text NOT NULL,
    -- IMSHOP's lastSyncDate: Unix ms of the last change from any channel (0 = never).
    last_sync_ms  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id)
);

-- A row per (user, item): its last action and that action's date. DELETE rows are
-- tombstones and are never removed, so other channels learn about deletions.
CREATE TABLE favourites (
    tenant_id   uuid NOT NULL,
    user_id     text NOT NULL,
    item_id     text NOT NULL,
    action      text NOT NULL CHECK (action IN ('ADD', 'DELETE')),
    action_ms   bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id, item_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES favourite_users (tenant_id, user_id) ON DELETE CASCADE
);

-- Every change a partner can see, per tenant, in commit order of insertion.
CREATE TABLE change_log (
    id           bigserial PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    entity       text NOT NULL,
    entity_id    text NOT NULL,
    change_type  text NOT NULL CHECK (change_type IN ('create', 'update', 'delete')),
    latest       jsonb NOT NULL,
    changed      jsonb NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX change_log_tenant ON change_log (tenant_id, entity, id);

-- Remote favourites sources speaking the Conference Compass protocol, and the token
-- each user's remote account gave us. These tokens are presented to the remote, so they
-- are stored as given; they are never returned by the API nor logged.
CREATE TABLE favourite_sources (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    base_url    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE favourite_source_tokens (
    source_id   uuid NOT NULL REFERENCES favourite_sources (id) ON DELETE CASCADE,
    user_id     text NOT NULL,
    token       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, user_id)
);
