//! Upgrading a hub whose jobs are in the previous release's layout (apalis's
//! `apalis.jobs`): every job carries over to the job core's table with its state, and
//! the new workers run what was waiting.

mod common;

use std::{borrow::Cow, time::Duration};

use apalis_postgres::PostgresStorage;
use common::{TestDb, Workers, process::wait_until, test_worker_settings};
use sqlx::PgPool;
use syncline_jobs::core::{JobState, store::operator};

/// The first migration of job core v2; the database is taken to just before it.
const JOB_CORE_V2: i64 = 20261202000009;

async fn migrate_to_previous_release(pool: &PgPool) {
    PostgresStorage::setup(pool).await.unwrap();
    // The worker that held the interrupted job, registered as the old release did.
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ('old-host-1-abcd:demo.noop', 'demo.noop', 'syncline', '', now())",
    )
    .execute(pool)
    .await
    .unwrap();
    let mut previous = sqlx::migrate!("./migrations");
    previous.migrations = Cow::Owned(
        previous
            .migrations
            .iter()
            .filter(|m| m.version < JOB_CORE_V2)
            .cloned()
            .collect(),
    );
    previous.dangerous_set_table_name("_syncline_migrations");
    previous.run(pool).await.unwrap();
}

/// A row as the previous release's enqueue and workers left it.
async fn old_job(
    pool: &PgPool,
    status: &str,
    attempts: i32,
    run_in_secs: i64,
    error: Option<&str>,
) -> String {
    let id = ulid::Ulid::generate().to_string();
    sqlx::query(
        "INSERT INTO apalis.jobs
             (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key,
              lock_by, done_at, last_result)
         VALUES ($1, 'demo.noop', convert_to('{\"v\":1,\"payload\":{\"label\":\"old\"}}', 'UTF8'),
                 $2, $3, 10, now() + $4 * interval '1 second', 0, NULL,
                 CASE WHEN $2 IN ('Queued', 'Running') THEN 'old-host-1-abcd:demo.noop' END,
                 CASE WHEN $2 IN ('Done', 'Killed') THEN now() END,
                 CASE WHEN $5::text IS NULL THEN NULL ELSE jsonb_build_object('Err', $5::text) END)",
    )
    .bind(&id)
    .bind(status)
    .bind(attempts)
    .bind(run_in_secs as f64)
    .bind(error)
    .execute(pool)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn queued_scheduled_retrying_and_ended_jobs_carry_over() {
    let db = TestDb::unmigrated().await;
    migrate_to_previous_release(&db.pool).await;
    let pending = old_job(&db.pool, "Pending", 0, 0, None).await;
    let scheduled = old_job(&db.pool, "Pending", 0, 3600, None).await;
    let interrupted = old_job(&db.pool, "Running", 1, 0, None).await;
    let retrying = old_job(&db.pool, "Failed", 2, 3600, Some("503 from peer")).await;
    let spent = old_job(&db.pool, "Failed", 10, 0, Some("503 from peer")).await;
    let killed = old_job(&db.pool, "Killed", 1, 0, Some("AbortError: 400 from peer")).await;
    let cancelled = old_job(
        &db.pool,
        "Killed",
        0,
        0,
        Some("cancelled by an operator: dup"),
    )
    .await;
    let done = old_job(&db.pool, "Done", 1, 0, None).await;

    syncline::db::migrate::run(&db.pool)
        .await
        .expect("upgrade applies");

    let state = |id: String| {
        let pool = db.pool.clone();
        async move {
            operator::show(&pool, &id)
                .await
                .unwrap()
                .expect("carried over")
                .job
        }
    };
    assert_eq!(state(scheduled.clone()).await.state, JobState::Scheduled);
    let retry = state(retrying.clone()).await;
    assert_eq!((retry.state, retry.attempt), (JobState::Retryable, 2));
    assert_eq!(retry.last_error.as_deref(), Some("503 from peer"));
    assert_eq!(state(spent).await.state, JobState::Discarded);
    let killed = state(killed).await;
    assert_eq!(killed.state, JobState::Discarded);
    assert_eq!(killed.last_error.as_deref(), Some("400 from peer"));
    assert_eq!(state(cancelled).await.state, JobState::Cancelled);
    assert_eq!(state(done).await.state, JobState::Completed);
    let old_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(old_rows, 0, "nothing is left for an old worker to run");

    // The new workers run what was due, the interrupted run with its attempt counted.
    let workers = Workers::start(&db.pool, test_worker_settings("upgraded"));
    for id in [&pending, &interrupted] {
        wait_until(Duration::from_secs(20), || async {
            state(id.clone()).await.state == JobState::Completed
        })
        .await;
    }
    assert_eq!(state(interrupted).await.attempt, 2);
    assert_eq!(state(scheduled).await.state, JobState::Scheduled);
    assert_eq!(state(retrying).await.state, JobState::Retryable);
    workers.stop().await;
}
