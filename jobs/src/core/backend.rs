//! syncline's apalis backend for one queue, on our own job table ([`super::store`]).
//!
//! A fetch is one statement that claims a batch straight into `running` (`FOR UPDATE
//! SKIP LOCKED`, round robin over fair keys for fair queues). Results do not come back
//! through here: the handler hands them to the process's acknowledgement writer
//! (`super::acker`), so claims and acknowledgements do not take turns. apalis-core's
//! [`Persisted`] state machine still drives registration, fetching and the shutdown
//! hand-back of claimed jobs that never started.

use std::{
    marker::PhantomData,
    sync::{Arc, Mutex},
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
use apalis_postgres::Error;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use ulid::Ulid;

use super::{
    store::worker::{self as store, ClaimRules, Claimed, Cursor},
    wakeup::WakeFlag,
};

/// How a queue is worked.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub queue: &'static str,
    pub batch_size: usize,
    /// apalis's own liveness tick; the rows in `job_workers` are kept by the process's
    /// heartbeat task (see `runner`).
    pub heartbeat: Duration,
    pub orphaned_after: Duration,
    pub max_recoveries: u32,
    pub rules: ClaimRules,
    /// Raised by the worker's [`super::wakeup::QueueWake`] when a wake-up arrives.
    pub woken: WakeFlag,
}

#[derive(Debug, Clone)]
struct QueueStore {
    pool: PgPool,
    config: QueueConfig,
    /// Where this worker's next claim starts.
    cursor: Arc<Mutex<Cursor>>,
}

impl QueueStore {
    async fn claim(&self, worker: &WorkerContext) -> Result<Vec<Task<Vec<u8>>>, Error> {
        // One claim at a time per worker (apalis fetches sequentially); the lock only
        // lets the cursor live in a clonable store.
        let mut cursor = self.cursor.lock().map(|c| c.clone()).unwrap_or_default();
        let rows = store::claim(
            &self.pool,
            worker.name(),
            self.config.queue,
            self.config.batch_size,
            self.config.rules,
            &mut cursor,
        )
        .await?;
        if let Ok(mut shared) = self.cursor.lock() {
            *shared = cursor;
        }
        rows.into_iter().map(into_task).collect()
    }
}

impl Persistence for QueueStore {
    type Compact = Vec<u8>;
    type Response = Value;
    type Error = Error;

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), Error> {
        store::heartbeat(&self.pool, &[(worker.name().to_owned(), self.config.queue)]).await?;
        // Rows still running under this name were left by an earlier run of this worker
        // (apalis restarts a worker under the same name after its backend failed).
        let queues = store::take_back_orphans(
            &self.pool,
            self.config.orphaned_after,
            self.config.max_recoveries,
            Some(worker.name()),
        )
        .await?;
        if !queues.is_empty() {
            tracing::warn!(
                worker = worker.name(),
                "took back jobs this worker held before it restarted"
            );
            store::wake(&self.pool, &queues).await?;
        }
        Ok(())
    }

    async fn heartbeat(&mut self, _: &WorkerContext) -> Result<(), Error> {
        Ok(())
    }

    async fn fetch_next(&mut self, worker: &WorkerContext) -> Result<Vec<Task<Vec<u8>>>, Error> {
        // Wake-ups before this claim are answered by it. One that arrives while it runs
        // may be for a job committed too late for it to see, and apalis would not claim
        // again until the next wake-up: claim once more.
        self.config.woken.take();
        let tasks = self.claim(worker).await?;
        if tasks.is_empty() && self.config.woken.take() {
            return self.claim(worker).await;
        }
        Ok(tasks)
    }

    /// Results go through the process's acknowledgement writer, not apalis's events.
    async fn handle_events(
        &mut self,
        _: Vec<TaskEvent<Value>>,
        _: &WorkerContext,
    ) -> Result<(), Error> {
        Ok(())
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<Vec<u8>>>,
        worker: &WorkerContext,
    ) -> Result<u64, Error> {
        let claims: Vec<(String, DateTime<Utc>)> = tasks
            .iter()
            .filter_map(|t| {
                let id = t.task_id()?.to_string();
                Some((id, t.ctx().data().get::<Claim>()?.0))
            })
            .collect();
        Ok(store::hand_back(&self.pool, worker.name(), &claims).await?)
    }

    /// Jobs are enqueued with `core::enqueue`, inside the caller's transaction.
    async fn push_tasks(&mut self, tasks: Vec<Task<Vec<u8>>>) -> Result<(), Error> {
        if tasks.is_empty() {
            Ok(())
        } else {
            Err(Error::Database(sqlx::Error::Protocol(
                "push through syncline_jobs::core::enqueue".into(),
            )))
        }
    }
}

/// The claim a task runs under, handed to the job's handler with the task.
#[derive(Debug, Clone, Copy)]
pub struct Claim(pub DateTime<Utc>);

fn into_task(row: Claimed) -> Result<Task<Vec<u8>>, Error> {
    let id = Ulid::from_string(&row.id).map_err(|e| {
        Error::TaskIdError(apalis_core::task::task_id::TaskIdError::Decode(
            e.to_string(),
        ))
    })?;
    // The claim counted this attempt; apalis counts it again as it starts the task.
    let before_this_one = usize::try_from(row.attempt - 1).unwrap_or_default();
    Ok(TaskBuilder::new(row.payload)
        .task_id(TaskId::from_ulid(id))
        .status(Status::Running)
        .attempt(before_this_one)
        .max_attempts(usize::try_from(row.max_attempts).unwrap_or_default())
        .data(Claim(row.claimed_at))
        .build())
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
                cursor: Arc::default(),
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
            .persist_results(false)
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
