//! The scheduler and the retention job it runs.

mod common;

use std::time::Duration;

use common::{TestDb, Workers};
use syncline_jobs::WorkerSettings;

fn with_scheduler(name: &str) -> WorkerSettings {
    let mut settings = common::test_worker_settings(name);
    settings.scheduler = true;
    settings
}
use sqlx::PgPool;

async fn prune_jobs(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT id, state::text FROM jobs WHERE queue = 'maintenance.prune'")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn wait_for_prune_done(pool: &PgPool) {
    let start = std::time::Instant::now();
    while !prune_jobs(pool).await.iter().any(|(_, s)| s == "completed") {
        assert!(start.elapsed() < Duration::from_secs(20), "prune never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An ended job (`state` is terminal) that finished `done_days_ago`, with one attempt.
async fn insert_job(pool: &PgPool, state: &str, done_days_ago: i32) -> String {
    let id = ulid::Ulid::generate().to_string();
    sqlx::query(
        "INSERT INTO jobs (id, queue, payload, state, attempt, max_attempts, run_at, finished_at)
         VALUES ($1, 'demo.noop', convert_to('{}', 'UTF8'), $2::job_state, 1, 1, now(), now() - $3 * interval '1 day')",
    )
    .bind(&id)
    .bind(state)
    .bind(done_days_ago)
    .execute(pool)
    .await
    .unwrap();
    let outcome = match state {
        "completed" => "completed",
        "cancelled" => "retry_scheduled", // cancelled while waiting for its retry
        _ => "discarded",
    };
    sqlx::query(
        "INSERT INTO job_attempts (job_id, queue, attempt, worker, started_at, finished_at, outcome)
         VALUES ($1, 'demo.noop', 1, 'w', now() - $2 * interval '1 day', now() - $2 * interval '1 day', $3)",
    )
    .bind(&id)
    .bind(done_days_ago)
    .bind(outcome)
    .execute(pool)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn two_worker_processes_enqueue_one_job_per_schedule_period() {
    let db = TestDb::new().await;
    let a = Workers::start(&db.pool, with_scheduler("a"));
    let b = Workers::start(&db.pool, with_scheduler("b"));
    wait_for_prune_done(&db.pool).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // both schedulers have ticked again
    assert_eq!(prune_jobs(&db.pool).await.len(), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn retention_prunes_old_ended_jobs_and_keeps_recent_ones() {
    let db = TestDb::new().await;
    let old_completed = insert_job(&db.pool, "completed", 30).await;
    let old_cancelled = insert_job(&db.pool, "cancelled", 30).await;
    let old_discarded = insert_job(&db.pool, "discarded", 30).await;
    let recent_completed = insert_job(&db.pool, "completed", 1).await;
    let recent_discarded = insert_job(&db.pool, "discarded", 1).await;

    let workers = Workers::start(&db.pool, with_scheduler("prune"));
    wait_for_prune_done(&db.pool).await;
    workers.stop().await;

    let left: Vec<String> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE queue = 'demo.noop' ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut kept = vec![recent_completed.clone(), recent_discarded.clone()];
    kept.sort();
    assert_eq!(left, kept);
    let history: Vec<String> =
        sqlx::query_scalar("SELECT job_id FROM job_attempts ORDER BY job_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    for pruned in [&old_completed, &old_cancelled, &old_discarded] {
        assert!(
            !history.contains(pruned),
            "{pruned}'s history is pruned with it"
        );
    }
    assert!(history.contains(&recent_completed) && history.contains(&recent_discarded));
}
