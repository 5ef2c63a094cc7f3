//! Enqueueing inside the caller's transaction.
//!
//! A request that stores a row and enqueues its job writes both in its own transaction:
//! both commit or neither does (apalis's own sink would open a transaction of its own).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{
    job::{Envelope, Job},
    notifier::PendingWakeup,
    store::queue::{self, NewJob},
};

#[derive(Debug, Default, Clone)]
pub struct EnqueueOptions {
    /// Run no earlier than this; now when unset.
    pub run_at: Option<DateTime<Utc>>,
    /// At most one job per queue carries a given key; a second enqueue is a no-op.
    /// Cancelling a job frees its key.
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

async fn insert<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    options: EnqueueOptions,
    wakeup: &'static str,
) -> Result<Option<String>, EnqueueError> {
    let payload = Envelope::encode(job)?;
    // Fair queues claim by key; a job without one shares the empty key.
    let fair_key = J::FAIR.then(|| job.fair_key().unwrap_or_default());
    let new = NewJob {
        queue: J::QUEUE,
        payload: &payload,
        max_attempts: J::POLICY.max_attempts,
        run_at: options.run_at,
        dedupe_key: options.dedupe_key.as_deref(),
        fair_key: fair_key.as_deref(),
        wakeup,
    };
    Ok(queue::insert(conn, new).await?)
}
