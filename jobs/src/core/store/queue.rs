//! Putting jobs on a queue: the insert every enqueue uses, and the change-log trigger's
//! function, which is written from the Rust constants of the job kind it enqueues so
//! that queue name, envelope version and attempt budget have one definition.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// A job row to insert.
pub struct NewJob<'a> {
    pub queue: &'static str,
    pub payload: &'a [u8],
    pub max_attempts: u32,
    pub run_at: Option<DateTime<Utc>>,
    pub dedupe_key: Option<&'a str>,
    pub fair_key: Option<&'a str>,
    /// `trigger`: the insert trigger wakes workers at commit; `deferred`: the caller
    /// sends the wake-up after commit (see `core::notifier`).
    pub wakeup: &'static str,
}

/// Inserts the job; `None` when a job of the queue already holds its de-duplication key.
pub async fn insert(
    conn: &mut PgConnection,
    job: NewJob<'_>,
) -> Result<Option<String>, sqlx::Error> {
    let id = ulid::Ulid::generate().to_string();
    // The wake-up setting is made in the same statement: one round trip.
    sqlx::query_scalar(
        "INSERT INTO jobs (id, queue, payload, state, max_attempts, run_at, dedupe_key, fair_key)
         SELECT $1, $2, $3,
                CASE WHEN $5::timestamptz > now() THEN 'scheduled' ELSE 'available' END::job_state,
                $4, COALESCE($5, now()), $6, $7
         FROM (SELECT set_config('syncline.wakeup', $8, true)) AS wakeup
         ON CONFLICT (queue, dedupe_key) WHERE dedupe_key IS NOT NULL AND state <> 'cancelled'
         DO NOTHING
         RETURNING id",
    )
    .bind(&id)
    .bind(job.queue)
    .bind(job.payload)
    .bind(i32::try_from(job.max_attempts).unwrap_or(i32::MAX))
    .bind(job.run_at)
    .bind(job.dedupe_key)
    .bind(job.fair_key)
    .bind(job.wakeup)
    .fetch_optional(conn)
    .await
}

/// What the change-log trigger enqueues for each webhook a change concerns.
pub struct ChangeLogDelivery {
    pub queue: &'static str,
    pub version: u16,
    pub max_attempts: u32,
}

/// (Re)defines `queue_webhook_deliveries()`, the function the change-log trigger runs:
/// one waiting delivery per webhook (its id is the de-duplication and fairness key).
pub async fn install_change_log_trigger(
    pool: &PgPool,
    delivery: &ChangeLogDelivery,
) -> Result<(), sqlx::Error> {
    // Identifiers and numbers only, from constants: quoting is enough.
    let sql = format!(
        "CREATE OR REPLACE FUNCTION queue_webhook_deliveries() RETURNS trigger AS $fn$
         BEGIN
             INSERT INTO jobs (id, queue, payload, max_attempts, dedupe_key, fair_key)
             SELECT new_job_id(), {queue},
                    convert_to(json_build_object('v', {version}, 'payload',
                               json_build_object('webhook_id', w.id))::text, 'UTF8'),
                    {max_attempts}, w.id::text, w.id::text
             FROM webhooks w
             WHERE w.deleted_at IS NULL AND w.state <> 'stop'
               AND EXISTS (SELECT 1 FROM inserted i
                           WHERE i.tenant_id = w.tenant_id AND i.entity = ANY (w.entities))
             ON CONFLICT (queue, dedupe_key) WHERE dedupe_key IS NOT NULL AND state <> 'cancelled'
             DO NOTHING;
             RETURN NULL;
         END;
         $fn$ LANGUAGE plpgsql",
        queue = quote_literal(delivery.queue),
        version = delivery.version,
        max_attempts = delivery.max_attempts,
    );
    // Every starting process installs it: concurrent `CREATE OR REPLACE` of one
    // function fail with "tuple concurrently updated", so they take turns.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('syncline: job core install'))")
        .execute(&mut *tx)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
