-- Job core v2: jobs live in a table of our own with an explicit, typed state.
--
-- Every statement on these tables is in jobs/src/core/store.rs; see the README's
-- "Job states" for the state machine. apalis stays the worker runtime; its
-- `apalis.jobs` table is no longer written (rows still waiting there are carried over
-- below and removed from it).

CREATE TYPE job_state AS ENUM (
    'available',  -- due now (or at run_at) and never tried, or replayed
    'scheduled',  -- waiting for run_at: enqueued for later, or snoozed
    'running',    -- claimed by the worker in locked_by
    'retryable',  -- an attempt failed; the next one is due at run_at
    'completed',  -- finished successfully
    'cancelled',  -- stopped by an operator; its de-duplication key is free again
    'discarded'   -- permanent error, attempts or crash recoveries used up
);

CREATE TABLE jobs (
    id            text PRIMARY KEY,        -- ULID: sorts by creation time
    queue         text NOT NULL,
    payload       bytea NOT NULL,          -- the versioned envelope {"v", "payload"}
    state         job_state NOT NULL DEFAULT 'available',
    attempt       integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),  -- attempts started
    max_attempts  integer NOT NULL CHECK (max_attempts >= 1),
    -- Times the job was taken back from a worker that died while running it.
    recoveries    integer NOT NULL DEFAULT 0,
    run_at        timestamptz NOT NULL DEFAULT now(),
    -- Claims share a queue fairly between these (a tenant, integration or webhook).
    fair_key      text,
    dedupe_key    text,
    -- The worker running the job and when it took it; a completed job keeps them, as
    -- the record of its last attempt (see job_attempts below).
    locked_by     text,
    locked_at     timestamptz,
    finished_at   timestamptz,
    last_error    text
);

-- What a claim reads: due jobs of one queue in order (claims resume after the last
-- job they took, so they do not walk the entries of jobs claimed before).
CREATE INDEX jobs_claim ON jobs (queue, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- Fair queues walk their keys.
CREATE INDEX jobs_claim_fair ON jobs (queue, fair_key, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable') AND fair_key IS NOT NULL;
-- Running jobs, for the orphan check, and for acknowledgements, which look each job
-- up by id here (a small index). Keyed by id on purpose: keyed by worker, a generic
-- plan of the acknowledgement probed it once per result row and read every running
-- job of the worker each time (measured: 0.5 ms per job).
CREATE INDEX jobs_running ON jobs (id) WHERE state = 'running';
-- Operator filters for jobs that need attention.
CREATE INDEX jobs_attention ON jobs (queue, state, id) WHERE state IN ('retryable', 'discarded', 'cancelled');
-- One job per key and queue, except cancelled ones: cancelling frees the key.
CREATE UNIQUE INDEX jobs_dedupe ON jobs (queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND state <> 'cancelled';

-- Live worker registry: each process keeps its workers' rows fresh, and a worker not
-- seen for the orphan window is dead (its running jobs are taken back).
CREATE TABLE job_workers (
    name        text PRIMARY KEY,
    queue       text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);

-- Attempt outcomes in the state vocabulary: `crashed` is written when a dead worker's
-- job is taken back, `snoozed` when a job asked to run again later. The attempt that
-- completes a job is not written here: the job row itself records it (worker, start,
-- end), which saves a row per job on the hot path.
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_outcome_check;
UPDATE job_attempts SET outcome = CASE outcome
    WHEN 'done' THEN 'completed'
    WHEN 'failed' THEN 'discarded'
    WHEN 'killed' THEN 'discarded'
    ELSE outcome END;
ALTER TABLE job_attempts ADD CONSTRAINT job_attempts_outcome_check
    CHECK (outcome IN ('completed', 'retry_scheduled', 'snoozed', 'discarded', 'crashed', 'cancelled'));

ALTER TABLE job_operator_actions DROP CONSTRAINT job_operator_actions_action_check;
ALTER TABLE job_operator_actions ADD CONSTRAINT job_operator_actions_action_check
    CHECK (action IN ('replay', 'cancel', 'snooze', 'run_now'));

-- Carry over what today's layout holds. Workers are stopped for the upgrade (README),
-- so jobs it shows as queued or running were interrupted: they are due again, and the
-- attempt they were in counts.
INSERT INTO jobs (id, queue, payload, state, attempt, max_attempts, run_at,
                  dedupe_key, finished_at, last_error)
SELECT j.id, j.job_type, j.job,
       CASE
           WHEN j.status = 'Done' THEN 'completed'
           WHEN j.status = 'Killed' AND j.last_result ->> 'Err' LIKE 'cancelled by an operator%' THEN 'cancelled'
           WHEN j.status = 'Killed' THEN 'discarded'
           WHEN j.status = 'Failed' AND j.attempts >= j.max_attempts THEN 'discarded'
           WHEN j.status = 'Failed' THEN 'retryable'
           WHEN j.status IN ('Queued', 'Running') THEN 'available'
           WHEN j.run_at > now() THEN 'scheduled'
           ELSE 'available'
       END::job_state,
       GREATEST(j.attempts, 0), GREATEST(j.max_attempts, 1),
       CASE WHEN j.status IN ('Queued', 'Running') THEN now() ELSE j.run_at END,
       j.idempotency_key,
       CASE WHEN j.status IN ('Done', 'Killed') OR (j.status = 'Failed' AND j.attempts >= j.max_attempts)
            THEN COALESCE(j.done_at, now()) END,
       regexp_replace(j.last_result ->> 'Err', '^AbortError: ', '')
FROM apalis.jobs j;
DELETE FROM apalis.jobs;

-- Wake-ups: one notification per queue per inserting statement, unless the transaction
-- sends its own after commit (`syncline.wakeup = 'deferred'`, see core/notifier.rs).
DROP TRIGGER IF EXISTS notify_workers ON apalis.jobs;
CREATE FUNCTION notify_job_queues() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('syncline_jobs', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE run_at <= now()) q;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER jobs_notify AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
    WHEN (current_setting('syncline.wakeup', true) IS DISTINCT FROM 'deferred')
    EXECUTE FUNCTION notify_job_queues();

-- The change-log trigger now calls `queue_webhook_deliveries()`, which the job core
-- (re)defines at every start from the job kind's Rust constants (queue, envelope
-- version, attempt budget); this placeholder is replaced before any worker runs.
CREATE OR REPLACE FUNCTION queue_webhook_deliveries() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'queue_webhook_deliveries() is installed by the job core at start-up';
END;
$$ LANGUAGE plpgsql;

-- Job ids are ULIDs (creation time, then randomness, in Crockford base 32), so ids sort
-- by creation and a time range is an id range. Rust makes them for its own enqueues;
-- this makes them for jobs enqueued by triggers.
CREATE FUNCTION new_job_id() RETURNS text AS $$
DECLARE
    digits constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    millis bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
    bits bit(130) := B'00' || millis::bit(48)
        || ('x' || encode(substring(uuid_send(gen_random_uuid()) FROM 1 FOR 10), 'hex'))::bit(80);
    id text := '';
BEGIN
    FOR i IN 0..25 LOOP
        id := id || substr(digits, substring(bits FROM i * 5 + 1 FOR 5)::integer + 1, 1);
    END LOOP;
    RETURN id;
END;
$$ LANGUAGE plpgsql VOLATILE;
