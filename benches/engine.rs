//! Job engine benchmark: how fast `demo.noop` jobs can be enqueued (one transaction per
//! job, and 1000 per transaction), how fast workers drain a full queue of them, and how
//! long a job waits between being added and being started (idle, and with the queue
//! under a steady background load). Prints the results as one table. Next to each
//! drain, a bare apalis-postgres worker empties the same number of jobs from apalis's
//! own table (`apalis.jobs`, which syncline no longer uses) as the baseline.
//!
//! Run with `cargo bench --bench engine`. Uses the server at `DATABASE_URL` when set,
//! otherwise an embedded cluster in a temporary folder; either way the benchmark works in
//! a fresh database of its own and drops it at the end. Set `RUST_LOG` to see more of
//! the engine's logs (warnings and errors are shown by default).

use std::time::{Duration, Instant};

mod support;

use anyhow::Context;
use apalis::{
    layers::WorkerBuilderExt,
    prelude::{BoxDynError, WorkerBuilder},
};
use apalis_core::backend::ext::poll_strategy::{PollWith, Strategy};
use apalis_postgres::PostgresStorage;
use sqlx::PgPool;
use support::{Report, Row, Server, execute, run_in_fresh_database, show_engine_warnings};
use syncline::{db, hub::Shutdown};
use syncline_jobs::{
    WorkerSet, WorkerSettings,
    core::{EnqueueOptions, Job, enqueue, job::Envelope},
    noop::Noop,
};
use tokio::{sync::watch, task::JoinHandle, time::MissedTickBehavior};
use uuid::Uuid;

/// Each scenario gives up after this long.
const SCENARIO_LIMIT: Duration = Duration::from_secs(120);
/// How often we look at the database while waiting for workers.
const POLL: Duration = Duration::from_millis(20);
/// Connections per pool, as the `work` command uses; enqueuers and workers get one each.
const POOL_SIZE: u32 = 20;

const ONE_PER_TX_JOBS: usize = 5_000;
const BATCHED_JOBS: usize = 20_000;
const JOBS_PER_TX: usize = 1_000;
const DRAIN_JOBS: usize = 20_000;
/// (concurrency, batch size) of each drain run.
const DRAIN_SETTINGS: [(usize, usize); 2] = [(32, 32), (128, 100)];

/// The baseline worker's poll interval (no LISTEN; in a drain it rarely waits).
const STOCK_POLL: Duration = Duration::from_millis(50);

const PROBES: usize = 200;
const PROBE_GAP: Duration = Duration::from_millis(20);
const PROBE_LABEL: &str = "probe";
/// Time a fresh worker set (and the background load) gets to settle before probing.
const WARM_UP: Duration = Duration::from_secs(1);
/// Background load: `LOAD_BATCH` jobs every `LOAD_PERIOD`, i.e. ~1000 jobs/s.
const LOAD_BATCH: usize = 50;
const LOAD_PERIOD: Duration = Duration::from_millis(50);

const DONE_NOOPS: &str =
    "SELECT count(*) FROM jobs WHERE queue = 'demo.noop' AND state = 'completed'";
const PROBES_COMPLETED: &str = "
    SELECT count(*) FROM jobs
    WHERE queue = 'demo.noop' AND state = 'completed'
      AND convert_from(payload, 'UTF8')::jsonb -> 'payload' ->> 'label' = $1";
/// Each completed probe's wait from its `run_at` to the start of its first attempt: the
/// earliest in its history, or else the attempt that completed it, which the job row
/// keeps (started when its worker claimed the job, `locked_at`).
const PROBE_LATENCIES_MS: &str = "
    SELECT (EXTRACT(EPOCH FROM LEAST(
                (SELECT min(a.started_at) FROM job_attempts a WHERE a.job_id = j.id),
                j.locked_at) - j.run_at) * 1000)::float8
    FROM jobs j
    WHERE j.queue = 'demo.noop' AND j.state = 'completed'
      AND convert_from(j.payload, 'UTF8')::jsonb -> 'payload' ->> 'label' = $1";

/// The bare apalis-postgres baseline works on apalis's own table, in its vocabulary.
const BASELINE_DONE_NOOPS: &str =
    "SELECT count(*) FROM apalis.jobs WHERE job_type = 'demo.noop' AND status = 'Done'";
/// `$1` waiting jobs of queue `$2` in apalis's table, each with payload `$3` and `$4`
/// attempts: the rows apalis's own sink would write.
const BASELINE_FILL: &str = "
    INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority)
    SELECT apalis.generate_ulid(), $2, $3, 'Pending', 0, $4, now(), 0
    FROM generate_series(1, $1)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    show_engine_warnings();
    let server = Server::start().await?;
    let server_ref = &server;
    let outcome = run_in_fresh_database(server_ref, |url| async move {
        run_scenarios(server_ref, &url).await
    })
    .await;
    server.stop();
    outcome?.print();
    Ok(())
}

async fn run_scenarios(server: &Server, url: &str) -> anyhow::Result<Report> {
    let clients = db::connect_with_retry(url, Duration::from_secs(30), POOL_SIZE).await?;
    db::migrate::run(&clients).await?;
    print_setup(server, &clients).await?;

    let mut report = Report {
        unit: "jobs",
        ..Report::default()
    };
    report.rows.push(enqueue_one_per_tx(&clients).await?);
    report.rows.push(enqueue_batched(&clients).await?);
    for (concurrency, batch_size) in DRAIN_SETTINGS {
        report
            .rows
            .push(drain_stock_apalis(&clients, url, concurrency, batch_size).await?);
        report
            .rows
            .push(drain(&clients, url, concurrency, batch_size).await?);
    }
    report.rows.push(latency_idle(&clients, url).await?);
    let (row, load) = latency_under_load(&clients, url).await?;
    report.rows.push(row);
    report.notes.push(load);

    clients.close().await;
    Ok(report)
}

async fn print_setup(server: &Server, pool: &PgPool) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(pool)
        .await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(pool).await?;
    let sync_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(pool)
        .await?;
    let defaults = WorkerSettings::new("defaults");
    println!("machine:   {cpus} CPUs (nproc)");
    println!("postgres:  {version}");
    println!(
        "           via {}; fsync={fsync}, synchronous_commit={sync_commit}",
        server.describe()
    );
    println!(
        "pools:     {POOL_SIZE} connections for enqueuers, {POOL_SIZE} for workers (one process)"
    );
    println!(
        "workers:   WorkerSettings::new defaults unless stated (concurrency {}, batch {}, \
         poll {} ms); all job kinds registered",
        defaults.concurrency,
        defaults.batch_size,
        defaults.poll_interval.as_millis()
    );
    println!(
        "latency:   {PROBES} probes, {} ms apart, after {} ms warm-up; load = {LOAD_BATCH} jobs \
         per tx every {} ms; waits poll every {} ms; each scenario gives up after {} s",
        PROBE_GAP.as_millis(),
        WARM_UP.as_millis(),
        LOAD_PERIOD.as_millis(),
        POLL.as_millis(),
        SCENARIO_LIMIT.as_secs()
    );
    println!();
    Ok(())
}

// --- Scenarios -------------------------------------------------------------------------

async fn enqueue_one_per_tx(pool: &PgPool) -> anyhow::Result<Row> {
    let deadline = Deadline::start("enqueue (own tx per job)");
    let job = Noop::default();
    let mut latencies = Vec::with_capacity(ONE_PER_TX_JOBS);
    let started = Instant::now();
    for done in 0..ONE_PER_TX_JOBS {
        deadline.check(|| format!("{done} of {ONE_PER_TX_JOBS} jobs enqueued"))?;
        let one = Instant::now();
        enqueue_in_one_tx(pool, 1, &job).await?;
        latencies.push(millis(one.elapsed()));
    }
    Ok(
        Row::throughput(deadline.scenario, ONE_PER_TX_JOBS, started.elapsed())
            .with_latencies(latencies),
    )
}

async fn enqueue_batched(pool: &PgPool) -> anyhow::Result<Row> {
    let deadline = Deadline::start(format!("enqueue ({JOBS_PER_TX} per tx)"));
    let started = Instant::now();
    fill_queue(pool, BATCHED_JOBS, &deadline).await?;
    Ok(Row::throughput(
        deadline.scenario,
        BATCHED_JOBS,
        started.elapsed(),
    ))
}

/// Fills the queue with the workers stopped, then times a fresh worker set emptying it.
async fn drain(
    clients: &PgPool,
    url: &str,
    concurrency: usize,
    batch_size: usize,
) -> anyhow::Result<Row> {
    let deadline = full_queue(clients, "drain no-op", concurrency, batch_size).await?;
    let mut settings = bench_worker_settings();
    settings.concurrency = concurrency;
    settings.batch_size = batch_size;
    let started = Instant::now();
    let running = Workers::start(url, settings).await?;
    wait_for_count(clients, DONE_NOOPS, None, DRAIN_JOBS, &deadline).await?;
    let elapsed = started.elapsed();
    running.stop().await?;
    Ok(Row::throughput(deadline.scenario, DRAIN_JOBS, elapsed))
}

/// The baseline for [`drain`]: as many no-op jobs, queued in apalis's own table,
/// emptied by a bare apalis-postgres worker (its stock `PostgresStorage` and polling, a
/// handler that does nothing, no retry layer or attempt history). Like every worker set
/// here it gets a pool of its own: stopping it can leave a pooled connection inside an
/// open transaction.
async fn drain_stock_apalis(
    clients: &PgPool,
    url: &str,
    concurrency: usize,
    batch_size: usize,
) -> anyhow::Result<Row> {
    let workers = &worker_pool(url).await?;
    let deadline = Deadline::start(format!(
        "baseline: bare apalis-postgres drain (concurrency {concurrency}, batch {batch_size})"
    ));
    empty_queues(clients).await?;
    sqlx::query(BASELINE_FILL)
        .bind(i32::try_from(DRAIN_JOBS)?)
        .bind(Noop::QUEUE)
        .bind(Envelope::encode(&Noop::default())?)
        .bind(i32::try_from(Noop::POLICY.max_attempts)?)
        .execute(clients)
        .await?;
    let config = apalis_postgres::Config::default()
        .queue(Noop::QUEUE)
        .batch_size(batch_size);
    let storage = PostgresStorage::<serde_json::Value>::new(workers).with_config(config);
    let storage = PollWith::new(storage, Strategy::new().interval(STOCK_POLL));
    let worker = WorkerBuilder::new(format!("baseline-{}", Uuid::new_v4().simple()))
        .backend(storage)
        .concurrency(concurrency)
        .build(|_: serde_json::Value| async { Ok::<(), BoxDynError>(()) });
    let started = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(worker.run_until(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
        Ok::<(), std::io::Error>(())
    }));
    wait_for_count(clients, BASELINE_DONE_NOOPS, None, DRAIN_JOBS, &deadline).await?;
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    running.await.context("baseline worker panicked")??;
    workers.close().await;
    Ok(Row::throughput(deadline.scenario, DRAIN_JOBS, elapsed))
}

/// Starts a drain scenario: an empty queue filled with `DRAIN_JOBS` no-op jobs.
async fn full_queue(
    clients: &PgPool,
    name: &str,
    concurrency: usize,
    batch_size: usize,
) -> anyhow::Result<Deadline> {
    let deadline = Deadline::start(format!(
        "{name} (concurrency {concurrency}, batch {batch_size})"
    ));
    empty_queues(clients).await?;
    fill_queue(clients, DRAIN_JOBS, &deadline).await?;
    Ok(deadline)
}

async fn latency_idle(clients: &PgPool, url: &str) -> anyhow::Result<Row> {
    let deadline = Deadline::start("add→start latency, idle");
    empty_queues(clients).await?;
    let running = Workers::start(url, bench_worker_settings()).await?;
    tokio::time::sleep(WARM_UP).await;
    let row = probe_latency(clients, deadline).await?;
    running.stop().await?;
    Ok(row)
}

/// Returns the row and a note on the background load actually achieved.
async fn latency_under_load(clients: &PgPool, url: &str) -> anyhow::Result<(Row, String)> {
    let deadline = Deadline::start(format!(
        "add→start latency, under load (~{} jobs/s)",
        load_rate()
    ));
    empty_queues(clients).await?;
    let running = Workers::start(url, bench_worker_settings()).await?;
    let load = BackgroundLoad::start(clients.clone());
    tokio::time::sleep(WARM_UP).await;
    let row = probe_latency(clients, deadline).await;
    let note = load.stop().await;
    running.stop().await?;
    Ok((row?, note?))
}

/// Enqueues the probes one at a time, waits until each has completed, and reports how
/// long each waited between its `run_at` and the start of its first attempt.
async fn probe_latency(pool: &PgPool, deadline: Deadline) -> anyhow::Result<Row> {
    let probe = Noop {
        label: PROBE_LABEL.to_owned(),
    };
    let started = Instant::now();
    for sent in 0..PROBES {
        deadline.check(|| format!("{sent} of {PROBES} probes enqueued"))?;
        enqueue_in_one_tx(pool, 1, &probe).await?;
        tokio::time::sleep(PROBE_GAP).await;
    }
    wait_for_count(pool, PROBES_COMPLETED, Some(PROBE_LABEL), PROBES, &deadline).await?;
    let elapsed = started.elapsed();
    let latencies: Vec<f64> = sqlx::query_scalar(PROBE_LATENCIES_MS)
        .bind(PROBE_LABEL)
        .fetch_all(pool)
        .await?;
    Ok(Row::latency(deadline.scenario, PROBES, elapsed, latencies))
}

// --- Helpers ---------------------------------------------------------------------------

/// Worker settings for one worker set, under a name no earlier set used.
fn bench_worker_settings() -> WorkerSettings {
    WorkerSettings::new(format!("bench-{}", Uuid::new_v4().simple()))
}

/// Empties our job tables and the baseline's.
async fn empty_queues(pool: &PgPool) -> anyhow::Result<()> {
    execute(pool, "TRUNCATE jobs, job_attempts, apalis.jobs".to_owned()).await
}

/// Enqueues `count` jobs in one transaction.
async fn enqueue_in_one_tx(pool: &PgPool, count: usize, job: &Noop) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    for _ in 0..count {
        enqueue(&mut tx, job, EnqueueOptions::default()).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Enqueues `total` no-op jobs, `JOBS_PER_TX` per transaction.
async fn fill_queue(pool: &PgPool, total: usize, deadline: &Deadline) -> anyhow::Result<()> {
    let job = Noop::default();
    for done in (0..total).step_by(JOBS_PER_TX) {
        deadline.check(|| format!("{done} of {total} jobs enqueued"))?;
        enqueue_in_one_tx(pool, JOBS_PER_TX.min(total - done), &job).await?;
    }
    Ok(())
}

/// Polls the count query `sql` (with `label` bound to `$1` if given) until it reaches
/// `target`.
async fn wait_for_count(
    pool: &PgPool,
    sql: &'static str,
    label: Option<&str>,
    target: usize,
    deadline: &Deadline,
) -> anyhow::Result<()> {
    loop {
        let mut query = sqlx::query_scalar::<_, i64>(sql);
        if let Some(label) = label {
            query = query.bind(label);
        }
        let count = query.fetch_one(pool).await?;
        if count >= target as i64 {
            return Ok(());
        }
        deadline.check(|| format!("{count} of {target} jobs completed"))?;
        tokio::time::sleep(POLL).await;
    }
}

/// A scenario's name and its time limit.
struct Deadline {
    scenario: String,
    until: Instant,
}

impl Deadline {
    fn start(scenario: impl Into<String>) -> Self {
        let scenario = scenario.into();
        eprintln!("running: {scenario}");
        Self {
            scenario,
            until: Instant::now() + SCENARIO_LIMIT,
        }
    }

    fn check(&self, progress: impl FnOnce() -> String) -> anyhow::Result<()> {
        if Instant::now() < self.until {
            return Ok(());
        }
        anyhow::bail!(
            "{}: gave up after {} s ({})",
            self.scenario,
            SCENARIO_LIMIT.as_secs(),
            progress()
        )
    }
}

/// A worker set running in the background, as the `work` command runs it: with a pool
/// of its own, so no scenario inherits connections (and their session state) from an
/// earlier one.
struct Workers {
    pool: PgPool,
    stop: watch::Sender<bool>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Workers {
    async fn start(url: &str, settings: WorkerSettings) -> anyhow::Result<Self> {
        let pool = worker_pool(url).await?;
        let (stop, shutdown) = Shutdown::manual();
        let set = syncline_jobs::register_all(WorkerSet::new(pool.clone(), settings));
        let handle = tokio::spawn(set.run(shutdown.wait()));
        Ok(Self { pool, stop, handle })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let stopped = self.handle.await.context("worker task panicked")?;
        self.pool.close().await;
        stopped
    }
}

async fn worker_pool(url: &str) -> anyhow::Result<PgPool> {
    db::connect_with_retry(url, Duration::from_secs(30), POOL_SIZE).await
}

/// A task enqueueing `LOAD_BATCH` no-op jobs every `LOAD_PERIOD` until stopped (or for
/// at most `SCENARIO_LIMIT`).
struct BackgroundLoad {
    stop: watch::Sender<bool>,
    handle: JoinHandle<anyhow::Result<usize>>,
    started: Instant,
}

impl BackgroundLoad {
    fn start(pool: PgPool) -> Self {
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(async move {
            let job = Noop::default();
            let mut ticks = tokio::time::interval(LOAD_PERIOD);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let until = Instant::now() + SCENARIO_LIMIT;
            let mut enqueued = 0;
            while !*stopped.borrow() && Instant::now() < until {
                ticks.tick().await;
                enqueue_in_one_tx(&pool, LOAD_BATCH, &job).await?;
                enqueued += LOAD_BATCH;
            }
            Ok(enqueued)
        });
        Self {
            stop,
            handle,
            started: Instant::now(),
        }
    }

    /// Stops the load and describes what it achieved.
    async fn stop(self) -> anyhow::Result<String> {
        let _ = self.stop.send(true);
        let enqueued = self.handle.await.context("background load panicked")??;
        let seconds = self.started.elapsed().as_secs_f64();
        Ok(format!(
            "background load: {enqueued} jobs in {seconds:.1} s ({:.0} jobs/s; target {})",
            enqueued as f64 / seconds,
            load_rate()
        ))
    }
}

fn load_rate() -> u128 {
    LOAD_BATCH as u128 * 1000 / LOAD_PERIOD.as_millis()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
