//! Workers are woken by notifications, not by their poll: with a one-minute poll a new
//! job starts within seconds, whether its wake-up came from the `jobs` insert trigger or,
//! for a deferred enqueue, from the process's `Notifier` after commit. A deferred job
//! whose wake-up has not been sent stays put, so the trigger really is skipped.

mod common;

use std::time::Duration;

use common::{TestDb, Workers, test_worker_settings};
use sqlx::PgPool;
use syncline_jobs::{
    core::{EnqueueOptions, Notifier, enqueue, enqueue_deferred},
    noop::Noop,
};

async fn status(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("SELECT state::text FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_until_done(pool: &PgPool, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(pool, id).await != "completed" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} not done within 10 s (the poll and heartbeat are 60 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn enqueue_committed(pool: &PgPool) -> String {
    let mut tx = pool.begin().await.unwrap();
    let id = enqueue(&mut tx, &Noop::default(), EnqueueOptions::default())
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn jobs_start_on_the_trigger_or_the_notifier_not_on_a_poll() {
    let db = TestDb::new().await;
    let mut settings = test_worker_settings("wakeups");
    // A worker also fetches when its heartbeat wakes it: both are a minute here.
    settings.poll_interval = Duration::from_secs(60);
    settings.heartbeat = Duration::from_secs(60);
    let workers = Workers::start(&db.pool, settings);

    // The first job may be found by the workers' start-up poll; the second can only be
    // woken by the trigger's notification.
    for _ in 0..2 {
        let id = enqueue_committed(&db.pool).await;
        wait_until_done(&db.pool, &id).await;
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tx = db.pool.begin().await.unwrap();
    let (id, wakeup) = enqueue_deferred(&mut tx, &Noop::default(), EnqueueOptions::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let id = id.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        status(&db.pool, &id).await,
        "available",
        "no wake-up sent yet"
    );

    wakeup.send(&Notifier::start(db.pool.clone()));
    wait_until_done(&db.pool, &id).await;
    workers.stop().await;
}
