//! syncline's apalis backend for one queue: the same `apalis.jobs` table and worker
//! registry as apalis-postgres, with a cheaper hot path.
//!
//! apalis-postgres spends three transactions on every batch of jobs: a fetch that marks
//! them `Queued`, a lock that marks them `Running`, and an acknowledgement that checks
//! row ownership under `FOR UPDATE` before writing results decoded from one JSON array.
//! Each of those is `BEGIN`, a statement and `COMMIT`: three round trips, and each row
//! is rewritten three times. Here a fetch is one statement that claims a batch straight
//! into `Running` (`FOR UPDATE SKIP LOCKED`), and an acknowledgement is one statement
//! over arrays for every result waiting in the channel. Both run in autocommit, so a
//! batch costs two round trips and each row two updates.
//!
//! Everything else (the event channel from the worker's middleware, heartbeats, the
//! shutdown hand-back of buffered jobs) is apalis-core's [`Persisted`] state machine,
//! and orphaned or abandoned jobs go back through apalis-postgres's own queries, so
//! processes running either backend share the table safely.

use std::{
    marker::PhantomData,
    task::{Context, Poll},
    time::Duration,
};

use apalis_codec::json::JsonCodec;
use apalis_core::{
    backend::{
        Backend, BackendConfig, WireFormatBackend,
        finalize::Durable,
        persistence::{Persisted, Persistence, TaskEvent, TaskPersistLayer},
    },
    task::{Task, builder::TaskBuilder, status::Status, task_id::TaskId},
    worker::context::WorkerContext,
};
use apalis_postgres::{Error, queries};
use serde_json::Value;
use sqlx::PgPool;
use ulid::Ulid;

use super::wakeup::WakeFlag;

/// The worker registry's `storage_name` for workers on this backend.
const STORAGE_NAME: &str = "syncline";

/// Claims up to `$3` due jobs of queue `$2` for worker `$1` in one statement.
const CLAIM: &str = "
    WITH due AS (
        SELECT id FROM apalis.jobs
        WHERE job_type = $2
          AND (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))
          AND run_at < now()
        ORDER BY priority DESC, run_at ASC
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    UPDATE apalis.jobs j
    SET status = 'Running', lock_by = $1, lock_at = now()
    FROM due
    WHERE j.id = due.id
    RETURNING j.id, j.job, j.attempts, j.max_attempts, j.priority,
              EXTRACT(EPOCH FROM j.run_at)::bigint AS run_at";

/// Writes the results of a batch; a row another worker has taken over since (after a
/// missed heartbeat) is left alone.
const ACKNOWLEDGE: &str = "
    UPDATE apalis.jobs j
    SET status = r.status, attempts = r.attempt, last_result = r.result, done_at = now()
    FROM unnest($1::text[], $2::text[], $3::int[], $4::jsonb[]) AS r(id, status, attempt, result)
    WHERE j.id = r.id AND j.lock_by = $5";

/// A worker that registers holds no jobs yet; rows still locked under its name were
/// left by an earlier run of it (apalis restarts a worker under the same name after its
/// backend failed, e.g. while the database was down) and go back to the queue.
const RELEASE_OWN: &str = "
    UPDATE apalis.jobs
    SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL,
        attempts = attempts + 1,
        last_result = '{\"Err\": \"Re-enqueued: its worker restarted.\"}'::jsonb
    WHERE lock_by = $1 AND status IN ('Queued', 'Running')";

const REGISTER: &str = "
    INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
    VALUES ($1, $2, $3, $4, now())
    ON CONFLICT (id) DO UPDATE SET
        worker_type = EXCLUDED.worker_type,
        storage_name = EXCLUDED.storage_name,
        layers = EXCLUDED.layers,
        last_seen = now()";

/// How a queue is worked: the knobs apalis-postgres's `Config` has, minus its switches
/// for locking and result persistence (this backend always does both, its own way).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub queue: &'static str,
    pub batch_size: usize,
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// Raised by the worker's [`super::wakeup::QueueWake`] when a wake-up arrives.
    pub woken: WakeFlag,
}

impl QueueConfig {
    /// A worker silent for this long is dead and its jobs go back to the queue.
    fn orphaned_after(&self) -> Duration {
        self.heartbeat * self.missed_heartbeats as u32
    }
}

#[derive(Debug, Clone)]
struct QueueStore {
    pool: PgPool,
    config: QueueConfig,
}

impl QueueStore {
    async fn claim(&self, worker: &WorkerContext) -> Result<Vec<Task<Vec<u8>>>, Error> {
        let rows: Vec<ClaimedRow> = sqlx::query_as(CLAIM)
            .bind(worker.name())
            .bind(self.config.queue)
            .bind(i32::try_from(self.config.batch_size).unwrap_or(i32::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(ClaimedRow::into_task).collect()
    }
}

impl Persistence for QueueStore {
    type Compact = Vec<u8>;
    type Response = Value;
    type Error = Error;

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), Error> {
        let orphaned_after = self.config.orphaned_after().as_secs();
        let mut tx = self.pool.begin().await?;
        queries::reenqueue_orphaned(&mut *tx, self.config.queue, orphaned_after).await?;
        let released = sqlx::query(RELEASE_OWN)
            .bind(worker.name())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if released > 0 {
            tracing::warn!(
                worker = worker.name(),
                released,
                "re-queued jobs this worker held before it restarted"
            );
        }
        sqlx::query(REGISTER)
            .bind(worker.name())
            .bind(self.config.queue)
            .bind(STORAGE_NAME)
            .bind(worker.get_service())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn heartbeat(&mut self, worker: &WorkerContext) -> Result<(), Error> {
        let orphaned_after = self.config.orphaned_after().as_secs();
        let mut tx = self.pool.begin().await?;
        queries::keep_alive(&mut *tx, self.config.queue, worker).await?;
        let recovered =
            queries::reenqueue_orphaned(&mut *tx, self.config.queue, orphaned_after).await?;
        tx.commit().await?;
        if recovered > 0 {
            tracing::info!(
                queue = self.config.queue,
                recovered,
                "took back jobs from a dead worker"
            );
        }
        Ok(())
    }

    async fn fetch_next(&mut self, worker: &WorkerContext) -> Result<Vec<Task<Vec<u8>>>, Error> {
        // Wake-ups before this claim are answered by it. One that arrives while it runs
        // may be for a job committed too late for it to see, and apalis would not claim
        // again until the next wake-up: claim once more. (Once: the state machine
        // neither heartbeats nor acknowledges while a claim is in flight.)
        self.config.woken.take();
        let tasks = self.claim(worker).await?;
        if tasks.is_empty() && self.config.woken.take() {
            return self.claim(worker).await;
        }
        Ok(tasks)
    }

    async fn handle_events(
        &mut self,
        events: Vec<TaskEvent<Value>>,
        worker: &WorkerContext,
    ) -> Result<(), Error> {
        let results = Results::from_events(events);
        if results.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(ACKNOWLEDGE)
            .bind(&results.ids)
            .bind(&results.statuses)
            .bind(&results.attempts)
            .bind(&results.results)
            .bind(worker.name())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<Vec<u8>>>,
        worker: &WorkerContext,
    ) -> Result<u64, Error> {
        let ids: Vec<String> = tasks
            .iter()
            .filter_map(|t| t.task_id().map(ToString::to_string))
            .collect();
        let mut conn = self.pool.acquire().await?;
        queries::reenqueue_abandoned(&mut *conn, self.config.queue, worker.name(), &ids).await
    }

    async fn push_tasks(&mut self, tasks: Vec<Task<Vec<u8>>>) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        queries::push_tasks(&mut *tx, self.config.queue, tasks).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: String,
    job: Vec<u8>,
    attempts: i32,
    max_attempts: i32,
    priority: i32,
    run_at: i64,
}

impl ClaimedRow {
    fn into_task(self) -> Result<Task<Vec<u8>>, Error> {
        let id = Ulid::from_string(&self.id).map_err(|e| {
            Error::TaskIdError(apalis_core::task::task_id::TaskIdError::Decode(
                e.to_string(),
            ))
        })?;
        Ok(TaskBuilder::new(self.job)
            .task_id(TaskId::from_ulid(id))
            .status(Status::Running)
            .attempt(usize::try_from(self.attempts).unwrap_or_default())
            .max_attempts(usize::try_from(self.max_attempts).unwrap_or_default())
            .priority(usize::try_from(self.priority).unwrap_or_default())
            .run_at_timestamp(u64::try_from(self.run_at).unwrap_or_default())
            .build())
    }
}

/// Job results as the column arrays `ACKNOWLEDGE` takes.
#[derive(Default)]
struct Results {
    ids: Vec<String>,
    statuses: Vec<String>,
    attempts: Vec<i32>,
    results: Vec<Value>,
}

impl Results {
    fn from_events(events: Vec<TaskEvent<Value>>) -> Self {
        let mut results = Self::default();
        for event in events {
            // Lock events never come (fetch already locks); others are not emitted
            // by apalis's persistence middleware today.
            let TaskEvent::Complete(done) = event else {
                continue;
            };
            let result = match done.result {
                Ok(value) => serde_json::json!({ "Ok": value }),
                Err(error) => serde_json::json!({ "Err": error }),
            };
            results.ids.push(done.task_id.to_string());
            results.statuses.push(done.status.to_string());
            results
                .attempts
                .push(i32::try_from(done.attempt).unwrap_or(i32::MAX));
            results.results.push(result);
        }
        results
    }
}

/// An apalis backend for one queue on [`QueueStore`]; build workers on it exactly as on
/// apalis-postgres's `PostgresStorage`.
pub struct JobStore<Args> {
    persistence: Persisted<QueueStore>,
    codec: JsonCodec,
    _args: PhantomData<Args>,
}

impl<Args> JobStore<Args> {
    pub fn new(pool: &PgPool, config: QueueConfig) -> Self {
        Self {
            persistence: Persisted::new(QueueStore {
                pool: pool.clone(),
                config,
            }),
            codec: JsonCodec::default(),
            _args: PhantomData,
        }
    }
}

impl<Args> Backend for JobStore<Args> {
    type Task = Task<Vec<u8>>;
    type Error = Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        let heartbeat = self.persistence.config.heartbeat;
        self.persistence.poll_ready(cx, worker, heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Error>>> {
        self.persistence.poll_next(cx, worker)
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        self.persistence.poll_close(cx, worker)
    }
}

impl<Args> BackendConfig for JobStore<Args> {
    type Args = Args;
    type Id = Ulid;
    type Kind = Durable;
    type Config = QueueConfig;
    type Layer = TaskPersistLayer<JsonCodec<Value>, Value>;

    fn config(&self) -> &QueueConfig {
        &self.persistence.config
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        let batch_size = self.persistence.config.batch_size;
        self.persistence
            .layer(JsonCodec::<Value>::default(), batch_size)
            .persist_results(true)
            .lock_tasks(false)
    }
}

impl<Args> WireFormatBackend for JobStore<Args> {
    type Codec = JsonCodec;
    type Compact = Vec<u8>;

    fn codec(&self) -> &JsonCodec {
        &self.codec
    }
}
