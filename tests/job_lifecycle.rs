//! Jobs through the HTTP API and real workers: run, retry by the policy table (durably),
//! stop on permanent errors, survive a worker restart mid-backoff.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{
    TestDb, Workers, enqueue_ping, outcomes, peer, spawn_app, spawn_app_with, test_worker_settings,
};
use reqwest::Method;
use serde_json::Value;
use syncline_jobs::{
    core::{EnqueueOptions, enqueue},
    noop::Noop,
};
use wiremock::ResponseTemplate;

const WAIT: Duration = Duration::from_secs(20);

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().expect("timestamp").parse().expect("RFC 3339")
}

/// The attempt history reads `history` and the last attempt has been acknowledged.
fn settled(job: &Value, history: &[&str], status: &str) -> bool {
    outcomes(job) == history && job["status"] == status
}

#[tokio::test]
async fn noop_job_enqueued_over_http_runs_once() {
    let app = spawn_app().await;
    let (status, body) = app
        .admin_json(Method::POST, "/admin/jobs/noop", Value::Null)
        .await;
    assert_eq!(status, 200);
    let id = body["job_id"].as_str().unwrap();
    let job = app
        .wait_for_job(id, WAIT, |j| settled(j, &["completed"], "completed"))
        .await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["queue"], "demo.noop");
    assert_eq!(job["attempts"], 1);
    app.stop().await;
}

#[tokio::test]
async fn retryable_error_schedules_the_next_run_by_the_policy_table() {
    let app = spawn_app().await;
    let server = peer(503).await;
    let id = enqueue_ping(&app, &server.uri()).await;
    let job = app
        .wait_for_job(&id, WAIT, |j| settled(j, &["retry_scheduled"], "retryable"))
        .await;
    let attempt = &job["attempt_history"][0];
    let delay = time(&job["run_at"]) - time(&attempt["finished_at"]);
    assert!(
        (4_900..=5_500).contains(&delay.num_milliseconds()),
        "first retry waits the table's 5 s, got {delay}"
    );
    assert_eq!(attempt["next_run_at"], job["run_at"]);
    assert_eq!(attempt["error"], "HTTP 503");
    assert_eq!(job["status"], "retryable");

    // A retryable job is not re-run at once; it waits for its run time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert_eq!(outcomes(&app.job(&id).await).len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn permanent_error_stops_the_job_at_once() {
    let app = spawn_app().await;
    let server = peer(400).await;
    let id = enqueue_ping(&app, &server.uri()).await;
    let job = app
        .wait_for_job(&id, WAIT, |j| settled(j, &["discarded"], "discarded"))
        .await;
    assert_eq!(job["status"], "discarded");
    assert_eq!(job["attempt_history"][0]["error"], "HTTP 400");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "no second attempt"
    );
    app.stop().await;
}

#[tokio::test]
async fn retryable_error_with_the_budget_spent_discards_the_job() {
    let app = spawn_app_with(false).await;
    let server = peer(502).await;
    let id = enqueue_ping(&app, &server.uri()).await;
    sqlx::query("UPDATE jobs SET attempt = max_attempts - 1 WHERE id = $1")
        .bind(&id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let workers = Workers::start(&app.db.pool, test_worker_settings("budget"));
    let job = app
        .wait_for_job(&id, WAIT, |j| settled(j, &["discarded"], "discarded"))
        .await;
    assert_eq!(job["status"], "discarded");
    assert_eq!(job["attempts"], job["max_attempts"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    workers.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn retry_survives_a_worker_restart_mid_backoff() {
    let app = spawn_app_with(false).await;
    let server = common::peer_first_then_ok(ResponseTemplate::new(503)).await;
    let id = enqueue_ping(&app, &server.uri()).await;

    let first = Workers::start(&app.db.pool, test_worker_settings("first"));
    let job = app
        .wait_for_job(&id, WAIT, |j| settled(j, &["retry_scheduled"], "retryable"))
        .await;
    first.stop().await;
    let scheduled = time(&job["run_at"]);

    let second_settings = test_worker_settings("second");
    let second_name = second_settings.process_name.clone();
    let second = Workers::start(&app.db.pool, second_settings);
    let job = app
        .wait_for_job(&id, WAIT, |j| {
            settled(j, &["retry_scheduled", "completed"], "completed")
        })
        .await;
    let retry = &job["attempt_history"][1];
    assert!(
        time(&retry["started_at"]) >= scheduled,
        "retry waited for its run time"
    );
    assert!(retry["worker"].as_str().unwrap().starts_with(&second_name));
    assert_eq!(job["status"], "completed");
    second.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn undecodable_payload_is_discarded_not_retried() {
    let app = spawn_app().await;
    sqlx::query(
        "INSERT INTO jobs (id, queue, payload, state, attempt, max_attempts, run_at)
         VALUES ($1, 'demo.ping', convert_to('{\"v\":1,\"payload\":{\"uri\":3}}', 'UTF8'), 'available', 0, 10, now())",
    )
    .bind(ulid::Ulid::generate().to_string())
    .execute(&app.db.pool)
    .await
    .unwrap();
    let id: String = sqlx::query_scalar("SELECT id FROM jobs WHERE queue = 'demo.ping'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let job = app
        .wait_for_job(&id, WAIT, |j| settled(j, &["discarded"], "discarded"))
        .await;
    let error = job["attempt_history"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("undecodable demo.ping payload"),
        "{error}"
    );
    app.stop().await;
}

#[tokio::test]
async fn enqueue_commits_or_rolls_back_with_the_callers_transaction() {
    let db = TestDb::new().await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let mut tx = db.pool.begin().await.unwrap();
    enqueue(&mut tx, &Noop::default(), EnqueueOptions::default())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count().await, 0, "rolled back with the transaction");

    let keyed = EnqueueOptions {
        dedupe_key: Some("user-1".into()),
        ..Default::default()
    };
    let mut tx = db.pool.begin().await.unwrap();
    let first = enqueue(&mut tx, &Noop::default(), keyed.clone())
        .await
        .unwrap();
    let second = enqueue(&mut tx, &Noop::default(), keyed).await.unwrap();
    tx.commit().await.unwrap();
    assert!(first.is_some());
    assert_eq!(second, None, "same key, same queue: de-duplicated");
    assert_eq!(count().await, 1);
}

#[tokio::test]
async fn a_worker_restarting_under_its_name_takes_back_the_jobs_it_held() {
    let app = spawn_app_with(false).await;
    let server = common::peer(200).await;
    let id = enqueue_ping(&app, &server.uri()).await;
    let settings = test_worker_settings("restarted");
    // What a worker that lost its database mid-job leaves behind: its registration and
    // the row still running under its name, which the worker reuses when it restarts.
    let worker = format!("{}:demo.ping", settings.process_name);
    sqlx::query("INSERT INTO job_workers (name, queue, last_seen) VALUES ($1, 'demo.ping', now())")
        .bind(&worker)
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE jobs SET state = 'running', locked_by = $2, locked_at = now(), attempt = 1
         WHERE id = $1",
    )
    .bind(&id)
    .bind(&worker)
    .execute(&app.db.pool)
    .await
    .unwrap();

    let workers = Workers::start(&app.db.pool, settings);
    let job = app
        .wait_for_job(&id, WAIT, |j| {
            settled(j, &["crashed", "completed"], "completed")
        })
        .await;
    assert_eq!(job["status"], "completed");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    workers.stop().await;
    app.stop().await;
}
