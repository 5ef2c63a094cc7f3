//! Runs job kinds on apalis workers: one apalis worker per queue per process, woken by
//! LISTEN/NOTIFY and a slow poll (for retries coming due), with our retry semantics
//! layered on top of apalis-postgres.
//!
//! apalis-postgres re-fetches a failed job whose `attempts < max_attempts` as soon as its
//! `run_at` has passed, and its acknowledgement never moves `run_at`. So on a retryable
//! error we move `run_at` to now + the policy's delay before handing the error back:
//! the retry is durable and waits for its time. Permanent errors are returned as
//! `AbortError` (status `Killed`), which apalis never re-fetches.

use std::{future::Future, sync::Arc, time::Duration};

use apalis::prelude::*;
use apalis_core::backend::ext::poll_strategy::PollWith;
use chrono::Utc;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

/// How often the scheduler checks whether a schedule's next period has begun.
const SCHEDULER_TICK: Duration = Duration::from_secs(1);

/// How long a worker that stopped on an error (its backend lost the database) waits
/// before it starts again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

use super::{
    attempts::{AttemptLog, AttemptRecord, Outcome},
    backend::{JobStore, QueueConfig},
    error::ErrorKind,
    job::{Envelope, Job, JobContext, PartnerSettings},
    schedule::{self, Schedule},
    wakeup::{WakeFlag, Wakeups},
};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Unique per process; apalis uses it to tell live workers from dead ones.
    pub process_name: String,
    /// Jobs of one queue running at once in this process.
    pub concurrency: usize,
    /// Jobs fetched per round trip.
    pub batch_size: usize,
    /// Fallback poll for jobs whose run time comes due (NOTIFY covers new ones).
    pub poll_interval: Duration,
    /// Heartbeat period; a worker silent for `heartbeat * missed_heartbeats` is dead and
    /// its jobs go back to the queue.
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// Time limit for each outbound HTTP call.
    pub http_timeout: Duration,
    /// How long in-flight jobs may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Finished jobs and their attempt history are pruned after this many days.
    pub retention_days: u32,
    /// Whether this process enqueues periodic jobs (any number of processes may).
    pub scheduler: bool,
    /// Multiplies every retry delay (1.0 = the policies' tables). Staging and tests use a
    /// small factor to watch long schedules play out quickly.
    pub retry_delay_scale: f64,
    /// When the daily ALLIO delete sweep runs, as time after midnight UTC.
    pub allio_sweep_at: Duration,
    pub partners: PartnerSettings,
}

impl WorkerSettings {
    pub fn new(process_name: impl Into<String>) -> Self {
        Self {
            process_name: process_name.into(),
            concurrency: 32,
            batch_size: 32,
            poll_interval: Duration::from_millis(500),
            heartbeat: Duration::from_secs(5),
            missed_heartbeats: 4,
            http_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            retention_days: 7,
            scheduler: true,
            retry_delay_scale: 1.0,
            allio_sweep_at: Duration::from_secs(3 * 3600),
            partners: PartnerSettings::default(),
        }
    }
}

struct Shared {
    retry_delay_scale: f64,
    pool: PgPool,
    http: reqwest::Client,
    attempts: AttemptLog,
    partners: PartnerSettings,
}

/// The job kinds one worker process runs. Build it with [`crate::register_all`].
pub struct WorkerSet {
    monitor: Monitor,
    shared: Arc<Shared>,
    writer: tokio::task::JoinHandle<()>,
    schedules: Vec<Schedule>,
    wakeups: Wakeups,
    pub settings: WorkerSettings,
}

impl WorkerSet {
    pub fn new(pool: PgPool, settings: WorkerSettings) -> Self {
        let (attempts, writer) = AttemptLog::start(pool.clone());
        let shared = Arc::new(Shared {
            http: super::outbound::client(settings.http_timeout),
            pool,
            attempts,
            partners: settings.partners.clone(),
            retry_delay_scale: settings.retry_delay_scale,
        });
        // apalis ends a worker whose backend fails (a heartbeat, fetch or acknowledgement
        // that cannot reach the database); without a restart the queue would stay
        // unserved for the life of the process. The restarted worker keeps its name, so
        // registering again takes back the jobs its failed run held (see `JobStore`).
        let monitor = Monitor::new()
            .shutdown_timeout(settings.shutdown_grace)
            .should_restart(|worker, error| {
                let restart = !worker.is_shutting_down();
                if restart {
                    tracing::warn!(worker = worker.name(), %error, "worker stopped on an error; restarting it");
                }
                restart
            });
        Self {
            monitor,
            shared,
            writer,
            schedules: Vec::new(),
            wakeups: Wakeups::default(),
            settings,
        }
    }

    /// Adds a periodic job; every worker process runs the scheduler, and each period
    /// still yields one job.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// Adds a worker for job kind `J`.
    pub fn add<J: Job>(mut self) -> Self {
        let shared = self.shared.clone();
        let settings = self.settings.clone();
        let wakeups = self.wakeups.clone();
        let name = format!("{}:{}", settings.process_name, J::QUEUE);
        self.monitor = self.monitor.register(move |restarts| {
            let pause = if restarts == 0 {
                Duration::ZERO
            } else {
                RESTART_PAUSE
            };
            let pool = &shared.pool;
            let woken = WakeFlag::default();
            let wake = wakeups.subscribe(J::QUEUE, settings.poll_interval, woken.clone());
            let storage = JobStore::<serde_json::Value>::new(
                pool,
                QueueConfig {
                    queue: J::QUEUE,
                    batch_size: settings.batch_size,
                    heartbeat: settings.heartbeat,
                    missed_heartbeats: settings.missed_heartbeats,
                    woken,
                },
            );
            let backend = PollWith::new(storage, wake).before_start(move |_| async move {
                tokio::time::sleep(pause).await;
                Ok(())
            });
            WorkerBuilder::new(name.as_str())
                .backend(backend)
                .data(shared.clone())
                .concurrency(settings.concurrency)
                .build(handle::<J>)
        });
        self
    }

    /// Runs until `shutdown` resolves, then lets in-flight jobs finish (up to the grace
    /// period) and flushes the attempt history.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let schedules = if self.settings.scheduler {
            self.schedules
        } else {
            Vec::new()
        };
        let scheduler = tokio::spawn(schedule::run(
            self.shared.pool.clone(),
            schedules,
            SCHEDULER_TICK,
            async move {
                let mut stopped = stopped;
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
            Ok(())
        };
        let listener = tokio::spawn(self.wakeups.listen(self.shared.pool.clone()));
        let result = self.monitor.run_with_signal(signal).await;
        listener.abort();
        let _ = scheduler.await;
        drop(self.shared);
        let _ = self.writer.await;
        result.map_err(|e| anyhow::anyhow!("workers stopped with an error: {e}"))
    }
}

async fn handle<J: Job>(
    args: serde_json::Value,
    task_id: TaskId,
    attempt: Attempt,
    worker: WorkerContext,
    shared: Data<Arc<Shared>>,
) -> Result<(), BoxDynError> {
    let job_id = task_id.to_string();
    let attempt = attempt.current() as u32;
    let ctx = JobContext {
        pool: shared.pool.clone(),
        http: shared.http.clone(),
        job_id: job_id.clone(),
        attempt,
        partners: shared.partners.clone(),
    };
    let span = tracing::info_span!(
        "job",
        job_id = %job_id,
        queue = J::QUEUE,
        attempt,
        integration = tracing::field::Empty,
        tenant = tracing::field::Empty,
    );
    let started_at = Utc::now();
    if J::DEDUPE_ONLY_WHILE_WAITING {
        release_dedupe_key(&shared.pool, &job_id).await;
    }
    let timer = std::time::Instant::now();
    let result = super::outbound::CALLING_QUEUE
        .scope(J::QUEUE, async {
            Envelope::<J>::decode(args)?.run(ctx).await
        })
        .instrument(span.clone())
        .await;
    let took = timer.elapsed();

    let (outcome, next_run_at, returned) = match result {
        Ok(()) => (Outcome::Done, None, Ok(())),
        Err(error) => match error.kind {
            ErrorKind::Permanent => (
                Outcome::Killed,
                None,
                Err(Box::new(AbortError::new(error.clone())) as BoxDynError),
            ),
            ErrorKind::Retryable { retry_after } => {
                match J::POLICY.next_delay(attempt, retry_after) {
                    None => (Outcome::Failed, None, Err(error.clone().into())),
                    Some(delay) => {
                        let delay = delay.mul_f64(shared.retry_delay_scale);
                        let next = schedule_retry(&shared.pool, &job_id, delay).await;
                        (Outcome::RetryScheduled, next, Err(error.clone().into()))
                    }
                }
            }
        },
    };
    let error = returned
        .as_ref()
        .err()
        .map(|e| match e.downcast_ref::<AbortError>() {
            Some(_) => e.source().map_or_else(|| e.to_string(), |s| s.to_string()),
            None => e.to_string(),
        });
    span.in_scope(|| match &error {
        None => tracing::debug!("job done"),
        Some(e) => tracing::warn!(outcome = outcome.as_str(), error = %e, "job attempt failed"),
    });
    super::metrics::attempt(J::QUEUE, outcome.as_str(), took);
    shared.attempts.record(AttemptRecord {
        job_id,
        queue: J::QUEUE,
        attempt,
        worker: worker.name().to_owned(),
        started_at,
        finished_at: Utc::now(),
        outcome,
        error,
        next_run_at,
    });
    returned
}

/// Names on the running job's span the tenant it works for, so the job's later log lines
/// carry it. Job kinds call this (or [`record_integration`]) once they know the tenant.
pub fn record_tenant(tenant: Uuid) {
    tracing::Span::current().record("tenant", tracing::field::display(tenant));
}

/// Names on the running job's span the integration it works for and that integration's
/// tenant.
pub async fn record_integration(
    conn: &mut PgConnection,
    integration: Uuid,
) -> Result<(), sqlx::Error> {
    let span = tracing::Span::current();
    span.record("integration", tracing::field::display(integration));
    let tenant: Option<Uuid> =
        sqlx::query_scalar("SELECT tenant_id FROM integrations WHERE id = $1")
            .bind(integration)
            .fetch_optional(conn)
            .await?;
    if let Some(tenant) = tenant {
        record_tenant(tenant);
    }
    Ok(())
}

async fn release_dedupe_key(pool: &PgPool, job_id: &str) {
    let released = sqlx::query("UPDATE apalis.jobs SET idempotency_key = NULL WHERE id = $1")
        .bind(job_id)
        .execute(pool)
        .await;
    if let Err(e) = released {
        tracing::warn!(job_id, error = %e, "could not release the de-duplication key");
    }
}

/// Moves the job's next run time; returns it, or `None` if the database refused (the job
/// then runs again as soon as apalis sees it, which is safe but early).
async fn schedule_retry(
    pool: &PgPool,
    job_id: &str,
    delay: Duration,
) -> Option<chrono::DateTime<Utc>> {
    let millis = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    sqlx::query_scalar(
        "UPDATE apalis.jobs SET run_at = now() + $2 * interval '1 millisecond'
         WHERE id = $1 RETURNING run_at",
    )
    .bind(job_id)
    .bind(millis as f64)
    .fetch_optional(pool)
    .await
    .inspect_err(|e| tracing::error!(job_id, error = %e, "could not schedule retry"))
    .ok()
    .flatten()
}
