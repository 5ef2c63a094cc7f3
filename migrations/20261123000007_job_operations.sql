-- What operators did to jobs (replay, cancel), with the reason they gave.
CREATE TABLE job_operator_actions (
    id       bigserial PRIMARY KEY,
    job_id   text NOT NULL,
    action   text NOT NULL CHECK (action IN ('replay', 'cancel')),
    reason   text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_operator_actions_job ON job_operator_actions (job_id);
