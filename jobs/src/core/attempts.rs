//! The attempt history: one row per attempt of every job (outcome, error, timing, worker).
//!
//! apalis keeps only a job's last result; operators need every attempt. Rows are sent
//! to a background writer that inserts them in batches, so recording costs the hot
//! path no round trip of its own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::{sync::mpsc, task::JoinHandle};

const BATCH: usize = 1000;
const WRITE_TRIES: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    RetryScheduled,
    /// Retryable error with the attempt budget spent.
    Failed,
    /// Permanent error.
    Killed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::RetryScheduled => "retry_scheduled",
            Outcome::Failed => "failed",
            Outcome::Killed => "killed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub job_id: String,
    pub queue: &'static str,
    pub attempt: u32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
}

#[derive(Clone)]
pub struct AttemptLog {
    sender: mpsc::UnboundedSender<AttemptRecord>,
}

impl AttemptLog {
    /// Starts the writer. It stops, after writing what it holds, once every
    /// `AttemptLog` clone is dropped; await the handle to be sure of it.
    pub fn start(pool: PgPool) -> (AttemptLog, JoinHandle<()>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_batches(pool, receiver));
        (AttemptLog { sender }, writer)
    }

    pub fn record(&self, record: AttemptRecord) {
        if self.sender.send(record).is_err() {
            tracing::warn!("attempt log closed; an attempt record was not kept");
        }
    }
}

async fn write_batches(pool: PgPool, mut receiver: mpsc::UnboundedReceiver<AttemptRecord>) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let mut tries = 0;
        while let Err(e) = insert(&pool, &batch).await {
            tries += 1;
            if tries == WRITE_TRIES {
                tracing::error!(error = %e, lost = batch.len(), "could not write attempt records");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
        }
        batch.clear();
    }
}

async fn insert(pool: &PgPool, batch: &[AttemptRecord]) -> Result<(), sqlx::Error> {
    let column = |f: fn(&AttemptRecord) -> String| batch.iter().map(f).collect::<Vec<_>>();
    let job_ids = column(|r| r.job_id.clone());
    let queues = column(|r| r.queue.to_owned());
    let workers = column(|r| r.worker.clone());
    let outcomes = column(|r| r.outcome.as_str().to_owned());
    let attempts: Vec<i32> = batch.iter().map(|r| r.attempt as i32).collect();
    let started: Vec<_> = batch.iter().map(|r| r.started_at).collect();
    let finished: Vec<_> = batch.iter().map(|r| r.finished_at).collect();
    let errors: Vec<_> = batch.iter().map(|r| r.error.clone()).collect();
    let next_runs: Vec<_> = batch.iter().map(|r| r.next_run_at).collect();
    sqlx::query(
        "INSERT INTO job_attempts
             (job_id, queue, attempt, worker, started_at, finished_at, outcome, error, next_run_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[], $4::text[],
                              $5::timestamptz[], $6::timestamptz[], $7::text[], $8::text[],
                              $9::timestamptz[])",
    )
    .bind(job_ids)
    .bind(queues)
    .bind(attempts)
    .bind(workers)
    .bind(started)
    .bind(finished)
    .bind(outcomes)
    .bind(errors)
    .bind(next_runs)
    .execute(pool)
    .await?;
    Ok(())
}
