//! Enqueueing inside the caller's transaction.
//!
//! apalis's own sink opens its own transaction, so a request that stores a row and
//! enqueues its job would have a window where the row exists and the job does not.
//! We write the apalis job row ourselves on the caller's connection instead: both
//! commit or neither does.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{
    job::{Envelope, Job},
    notifier::PendingWakeup,
};

#[derive(Debug, Default, Clone)]
pub struct EnqueueOptions {
    /// Run no earlier than this; now when unset.
    pub run_at: Option<DateTime<Utc>>,
    /// At most one job per queue carries a given key; a second enqueue is a no-op.
    pub dedupe_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("payload does not serialise: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Inside a job, a failed enqueue is worth a retry (a bad payload is a bug, not data).
impl From<EnqueueError> for super::JobError {
    fn from(e: EnqueueError) -> Self {
        super::JobError::retryable(format!("enqueue failed: {e}"))
    }
}

/// Adds `job` to its queue on `conn` (normally an open transaction). Returns the new
/// job id, or `None` when `dedupe_key` matched an existing job. Workers are woken when
/// the transaction commits.
pub async fn enqueue<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    options: EnqueueOptions,
) -> Result<Option<String>, EnqueueError> {
    insert(conn, job, options, "trigger").await
}

/// [`enqueue`] for intake routes under load: the insert trigger's notification is
/// switched off for the rest of the transaction (see [`super::notifier`]), and the
/// caller sends the returned wake-up once it has committed.
pub async fn enqueue_deferred<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    options: EnqueueOptions,
) -> Result<(Option<String>, PendingWakeup), EnqueueError> {
    let id = insert(conn, job, options, "deferred").await?;
    Ok((id, PendingWakeup(J::QUEUE)))
}

/// `wakeup` is the transaction-local `syncline.wakeup` setting the insert trigger reads;
/// setting it in the same statement saves a round trip.
async fn insert<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    options: EnqueueOptions,
    wakeup: &str,
) -> Result<Option<String>, EnqueueError> {
    let id = ulid::Ulid::generate().to_string();
    let payload = Envelope::encode(job)?;
    let inserted = sqlx::query_scalar::<_, String>(
        "INSERT INTO apalis.jobs
             (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
         SELECT $1, $2, $3, 'Pending', 0, $4, COALESCE($5, now()), 0, $6
         FROM (SELECT set_config('syncline.wakeup', $7, true)) AS wakeup
         ON CONFLICT (job_type, idempotency_key) DO NOTHING
         RETURNING id",
    )
    .bind(&id)
    .bind(J::QUEUE)
    .bind(payload)
    .bind(J::POLICY.max_attempts as i32)
    .bind(options.run_at)
    .bind(options.dedupe_key)
    .bind(wakeup)
    .fetch_optional(conn)
    .await?;
    Ok(inserted)
}
