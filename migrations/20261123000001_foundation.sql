-- Tenants, their integrations with partners, and the credentials partners present.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE integrations (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('imshop', 'cc', 'allio', 'ergonode', 'feed')),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- Only a SHA-256 of each token is kept; the token itself is shown once, at creation.
-- `user_id` is set for per-user tokens (e.g. Conference Compass users).
CREATE TABLE credentials (
    id              uuid PRIMARY KEY,
    integration_id  uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    user_id         text CHECK (user_id IS NULL OR length(user_id) BETWEEN 1 AND 200),
    token_hash      bytea NOT NULL UNIQUE,
    token_hint      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
CREATE INDEX credentials_integration ON credentials (integration_id);

-- One row per attempt of every job (apalis keeps only the last result).
CREATE TABLE job_attempts (
    id           bigserial PRIMARY KEY,
    job_id       text NOT NULL,
    queue        text NOT NULL,
    attempt      integer NOT NULL,
    worker       text NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('done', 'retry_scheduled', 'failed', 'killed')),
    error        text,
    next_run_at  timestamptz
);
CREATE INDEX job_attempts_job ON job_attempts (job_id, attempt);
