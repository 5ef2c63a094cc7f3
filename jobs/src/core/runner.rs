//! Runs job kinds on apalis workers: one apalis worker per queue per process, woken by
//! LISTEN/NOTIFY and a slow poll (for retries coming due), on our own job table
//! ([`super::store`]).
//!
//! apalis runs the handler; the handler decides what the attempt means ([`Verdict`]:
//! completed, retry at T, snoozed, discarded), catching panics, and hands that to the
//! process's [`Acker`]. apalis itself is told every attempt succeeded and persists
//! nothing. Liveness is ours too: one heartbeat task per process keeps all its workers
//! registered for as long as the process runs — through a shutdown drain as well — and
//! takes back the jobs of workers that stopped heart-beating.

use std::{future::Future, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use apalis::prelude::*;
use apalis_core::backend::ext::poll_strategy::PollWith;
use chrono::Utc;
use futures::FutureExt;
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
    acker::Acker,
    backend::{Claim, JobStore, QueueConfig},
    delay,
    error::{ErrorKind, JobError},
    job::{Envelope, Job, JobContext, PartnerSettings},
    policy::RetryPolicy,
    schedule::{self, Schedule},
    store::worker::{self as store, AttemptOutcome, ClaimRules, Finished},
    wakeup::{WakeFlag, Wakeups},
};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Unique per process; workers are named `<process>:<queue>`.
    pub process_name: String,
    /// Jobs of one queue running at once in this process.
    pub concurrency: usize,
    /// Jobs fetched per round trip.
    pub batch_size: usize,
    /// Fallback poll for jobs whose run time comes due (NOTIFY covers new ones).
    pub poll_interval: Duration,
    /// Heartbeat period; a worker silent for `heartbeat * missed_heartbeats` is dead and
    /// its running jobs are taken back (checked at every heartbeat of every process).
    pub heartbeat: Duration,
    pub missed_heartbeats: u32,
    /// A job taken back from dead workers this many times is discarded.
    pub max_recoveries: u32,
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
            heartbeat: Duration::from_secs(2),
            missed_heartbeats: 4,
            max_recoveries: 3,
            http_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            retention_days: 7,
            scheduler: true,
            retry_delay_scale: 1.0,
            allio_sweep_at: Duration::from_secs(3 * 3600),
            partners: PartnerSettings::default(),
        }
    }

    /// A worker silent for this long is dead.
    pub fn orphaned_after(&self) -> Duration {
        self.heartbeat * self.missed_heartbeats.max(1)
    }
}

struct Shared {
    retry_delay_scale: f64,
    pool: PgPool,
    http: reqwest::Client,
    acker: Acker,
    partners: PartnerSettings,
}

/// The job kinds one worker process runs. Build it with [`crate::register_all`].
pub struct WorkerSet {
    monitor: Monitor,
    shared: Arc<Shared>,
    writer: tokio::task::JoinHandle<()>,
    schedules: Vec<Schedule>,
    wakeups: Wakeups,
    /// `(worker name, queue)` of every worker, for the heartbeat.
    workers: Vec<(String, &'static str)>,
    pub settings: WorkerSettings,
}

impl WorkerSet {
    pub fn new(pool: PgPool, settings: WorkerSettings) -> Self {
        let (acker, writer) = Acker::start(pool.clone());
        let shared = Arc::new(Shared {
            http: super::outbound::client(settings.http_timeout),
            pool,
            acker,
            partners: settings.partners.clone(),
            retry_delay_scale: settings.retry_delay_scale,
        });
        // apalis ends a worker whose backend fails (a claim that cannot reach the
        // database); without a restart the queue would stay unserved for the life of
        // the process. The restarted worker keeps its name, so registering again takes
        // back the jobs its failed run held (see `JobStore`).
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
            workers: Vec::new(),
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
        self.workers.push((name.clone(), J::QUEUE));
        self.monitor = self.monitor.register(move |restarts| {
            let pause = if restarts == 0 {
                Duration::ZERO
            } else {
                RESTART_PAUSE
            };
            let woken = WakeFlag::default();
            let wake = wakeups.subscribe(J::QUEUE, settings.poll_interval, woken.clone());
            let storage = JobStore::<serde_json::Value>::new(
                &shared.pool,
                QueueConfig {
                    queue: J::QUEUE,
                    batch_size: settings.batch_size,
                    heartbeat: settings.heartbeat,
                    orphaned_after: settings.orphaned_after(),
                    max_recoveries: settings.max_recoveries,
                    rules: ClaimRules {
                        release_dedupe_key: J::DEDUPE_ONLY_WHILE_WAITING,
                        fair: J::FAIR,
                    },
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
    /// period), writes their acknowledgements, and only then stops heart-beating.
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
        let pool = self.shared.pool.clone();
        let heart = tokio::spawn(beat(
            pool.clone(),
            self.workers.clone(),
            self.settings.clone(),
        ));
        let listener = tokio::spawn(self.wakeups.listen(pool.clone()));
        let result = self.monitor.run_with_signal(signal).await;
        listener.abort();
        let _ = scheduler.await;
        drop(self.shared);
        let _ = self.writer.await;
        heart.abort();
        let names: Vec<String> = self.workers.into_iter().map(|(name, _)| name).collect();
        if let Err(e) = store::retire(&pool, &names).await {
            tracing::warn!(error = %e, "could not deregister workers; they will be seen as dead");
        }
        result.map_err(|e| anyhow::anyhow!("workers stopped with an error: {e}"))
    }
}

/// The process's heartbeat: keeps every worker of the process registered, and takes
/// back running jobs of workers (of any process) not seen for the orphan window.
async fn beat(pool: PgPool, workers: Vec<(String, &'static str)>, settings: WorkerSettings) {
    let mut tick = tokio::time::interval(settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = store::heartbeat(&pool, &workers).await {
            tracing::warn!(error = %e, "heartbeat failed");
            continue;
        }
        let taken = store::take_back_orphans(
            &pool,
            settings.orphaned_after(),
            settings.max_recoveries,
            None,
        )
        .await;
        match taken {
            Ok(queues) if !queues.is_empty() => {
                tracing::info!(?queues, "took back jobs from dead workers");
                if let Err(e) = store::wake(&pool, &queues).await {
                    tracing::warn!(error = %e, "wake-up after takeover not sent");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not check for dead workers"),
        }
    }
}

async fn handle<J: Job>(
    args: serde_json::Value,
    task_id: TaskId,
    attempt: Attempt,
    worker: WorkerContext,
    claim: Data<Claim>,
    shared: Data<Arc<Shared>>,
) -> Result<(), BoxDynError> {
    let job_id = task_id.to_string();
    let attempt = attempt.current() as u32;
    let Claim(claimed_at) = *claim;
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
    let timer = std::time::Instant::now();
    // A panic anywhere in the job is this attempt's failure, not the worker's.
    let run = super::outbound::CALLING_QUEUE.scope(J::QUEUE, async {
        Envelope::<J>::decode(args)?.run(ctx).await
    });
    let result = AssertUnwindSafe(run)
        .catch_unwind()
        .instrument(span.clone())
        .await
        .unwrap_or_else(|panic| Err(JobError::retryable(panic_message(panic.as_ref()))));
    let took = timer.elapsed();

    let verdict = Verdict::of(result, attempt, &J::POLICY, shared.retry_delay_scale);
    span.in_scope(|| match &verdict.error {
        None => tracing::debug!(outcome = verdict.outcome.as_str(), "job attempt finished"),
        Some(e) => {
            tracing::warn!(outcome = verdict.outcome.as_str(), error = %e, "job attempt failed")
        }
    });
    super::metrics::attempt(J::QUEUE, verdict.outcome.as_str(), took);
    shared
        .acker
        .send(Finished {
            job_id,
            queue: J::QUEUE,
            worker: worker.name().to_owned(),
            claimed_at,
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            outcome: verdict.outcome,
            run_in: verdict.run_in,
            error: verdict.error,
            started_at,
            finished_at: Utc::now(),
        })
        .await;
    Ok(())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("the job panicked: {text}")
}

/// What an attempt's result means for its job: a pure function of the result, the
/// attempt number and the job kind's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: AttemptOutcome,
    /// When to run again (retries and snoozes).
    pub run_in: Option<Duration>,
    pub error: Option<String>,
}

impl Verdict {
    pub fn of(
        result: Result<(), JobError>,
        attempt: u32,
        policy: &RetryPolicy,
        delay_scale: f64,
    ) -> Verdict {
        let error = match result {
            Ok(()) => {
                return Verdict {
                    outcome: AttemptOutcome::Completed,
                    run_in: None,
                    error: None,
                };
            }
            Err(error) => error,
        };
        let (outcome, run_in) = match error.kind {
            ErrorKind::Snooze { after } => (AttemptOutcome::Snoozed, Some(delay::clamp(after))),
            ErrorKind::Permanent => (AttemptOutcome::Discarded, None),
            ErrorKind::Retryable { retry_after } => {
                match policy.next_delay(attempt, retry_after.map(delay::clamp)) {
                    None => (AttemptOutcome::Discarded, None),
                    Some(wait) => (
                        AttemptOutcome::RetryScheduled,
                        Some(delay::scaled(wait, delay_scale)),
                    ),
                }
            }
        };
        Verdict {
            outcome,
            run_in,
            error: (outcome != AttemptOutcome::Snoozed).then_some(error.message),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy::STANDARD;

    fn verdict(result: Result<(), JobError>, attempt: u32) -> Verdict {
        Verdict::of(result, attempt, &POLICY, 1.0)
    }

    #[test]
    fn success_completes_and_permanent_errors_discard() {
        assert_eq!(verdict(Ok(()), 1).outcome, AttemptOutcome::Completed);
        let v = verdict(Err(JobError::permanent("400 from peer")), 1);
        assert_eq!(
            (v.outcome, v.run_in, v.error.as_deref()),
            (AttemptOutcome::Discarded, None, Some("400 from peer"))
        );
    }

    #[test]
    fn retries_follow_the_table_until_the_budget_is_spent() {
        let v = verdict(Err(JobError::retryable("503")), 2);
        assert_eq!(v.outcome, AttemptOutcome::RetryScheduled);
        assert_eq!(v.run_in, Some(Duration::from_secs(30)));
        let last = verdict(Err(JobError::retryable("503")), POLICY.max_attempts);
        assert_eq!(
            (last.outcome, last.run_in),
            (AttemptOutcome::Discarded, None)
        );
    }

    #[test]
    fn an_endless_retry_after_is_clamped_and_scaling_cannot_overflow() {
        let asked = Some(Duration::from_secs(u64::MAX));
        let v = verdict(Err(JobError::retry_after("429", asked)), 1);
        assert_eq!(v.run_in, Some(delay::max()));
        let scaled = Verdict::of(Err(JobError::retry_after("429", asked)), 1, &POLICY, 0.5);
        assert_eq!(scaled.run_in, Some(delay::max() / 2));
    }

    #[test]
    fn a_snooze_keeps_no_error_and_its_delay() {
        let v = verdict(
            Err(JobError::snooze(Duration::from_secs(3))),
            POLICY.max_attempts,
        );
        assert_eq!(v.outcome, AttemptOutcome::Snoozed);
        assert_eq!(v.run_in, Some(Duration::from_secs(3)));
        assert_eq!(v.error, None);
    }

    #[test]
    fn a_panic_message_names_the_panic() {
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "the job panicked: boom 7");
    }
}
