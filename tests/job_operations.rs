//! Operators on a bad day: list discarded jobs, replay them in bulk by filter, cancel
//! scheduled retries, read per-queue stats — through the admin API with real workers.

mod common;

use std::time::Duration;

use common::{
    Workers, enqueue_ping, outcomes, peer, spawn_app, spawn_app_with, test_worker_settings,
};
use reqwest::Method;
use serde_json::{Value, json};
use wiremock::{Mock, ResponseTemplate, matchers::any};

const WAIT: Duration = Duration::from_secs(20);

fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn discarded_jobs_are_listed_with_their_error_and_bulk_replay_fixes_them() {
    let app = spawn_app().await;
    let server = peer(400).await;
    let mut failed = Vec::new();
    for _ in 0..3 {
        failed.push(enqueue_ping(&app, &server.uri()).await);
    }
    let (_, ok) = app
        .admin_json(Method::POST, "/admin/jobs/noop", Value::Null)
        .await;
    for id in &failed {
        app.wait_for_job(id, WAIT, |j| j["status"] == "discarded")
            .await;
    }
    app.wait_for_job(ok["job_id"].as_str().unwrap(), WAIT, |j| {
        j["status"] == "completed"
    })
    .await;

    let (status, page) = app
        .admin_json(
            Method::GET,
            "/admin/jobs?status=discarded&queue=demo.ping",
            Value::Null,
        )
        .await;
    assert_eq!(status, 200);
    let mut listed = ids(&page);
    listed.reverse();
    assert_eq!(listed, failed, "newest first, only the discarded pings");
    assert_eq!(page["jobs"][0]["last_error"], "HTTP 400");
    // Absent, not null: the document does not allow null for these.
    assert_eq!(page.get("next_before"), None, "a last page: {page}");
    let done = app.job(ok["job_id"].as_str().unwrap()).await;
    assert_eq!(done.get("last_error"), None, "{done}");
    assert_eq!(done["attempt_history"][0].get("error"), None, "{done}");

    // The partner is healthy again.
    server.reset().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let since = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let filter = json!({ "queue": "demo.ping", "status": "discarded", "since": since });
    let (_, dry) = app
        .admin_json(
            Method::POST,
            "/admin/jobs/replay",
            json!({ "filter": filter, "dry_run": true }),
        )
        .await;
    assert_eq!(dry["count"], 3);
    let (status, done) = app
        .admin_json(
            Method::POST,
            "/admin/jobs/replay",
            json!({ "filter": filter, "reason": "partner fixed its auth" }),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["count"], 3);
    for id in &failed {
        let job = app
            .wait_for_job(id, WAIT, |j| j["status"] == "completed")
            .await;
        assert_eq!(outcomes(&job), ["discarded", "completed"], "history kept");
    }
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM job_operator_actions WHERE action = 'replay'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(reasons, vec!["partner fixed its auth"; 3]);
    // Replaying again touches nothing: they are completed.
    let (_, again) = app
        .admin_json(
            Method::POST,
            "/admin/jobs/replay",
            json!({ "filter": { "ids": failed }, "reason": "again" }),
        )
        .await;
    assert_eq!(again["count"], 0);
    app.stop().await;
}

#[tokio::test]
async fn replaying_an_available_job_does_nothing() {
    let app = spawn_app_with(false).await;
    let (_, body) = app
        .admin_json(Method::POST, "/admin/jobs/noop", Value::Null)
        .await;
    let id = body["job_id"].as_str().unwrap();
    let (_, result) = app
        .admin_json(
            Method::POST,
            "/admin/jobs/replay",
            json!({ "filter": { "ids": [id] }, "reason": "why not" }),
        )
        .await;
    assert_eq!(result["count"], 0);
    assert_eq!(app.job(id).await["status"], "available");
    app.stop().await;
}

#[tokio::test]
async fn cancel_stops_a_scheduled_retry() {
    let app = spawn_app_with(false).await;
    let server = peer(503).await;
    let id = enqueue_ping(&app, &server.uri()).await;
    let workers = Workers::start(&app.db.pool, test_worker_settings("ops"));
    app.wait_for_job(&id, WAIT, |j| j["status"] == "retryable")
        .await;
    let (status, result) = app
        .admin_json(
            Method::POST,
            "/admin/jobs/cancel",
            json!({ "filter": { "ids": [id] }, "reason": "partner retired" }),
        )
        .await;
    assert_eq!((status, result["count"].as_i64()), (200, Some(1)));
    // Even once its retry time has passed, it does not run again.
    sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
        .bind(&id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    workers.stop().await;
    let job = app.job(&id).await;
    assert_eq!(job["status"], "cancelled");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("partner retired")
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    let (_, stats) = app
        .admin_json(Method::GET, "/admin/jobs/stats", Value::Null)
        .await;
    let ping_stats = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "demo.ping")
        .unwrap()
        .clone();
    assert_eq!(
        ping_stats["counts"],
        json!([{ "status": "cancelled", "count": 1 }])
    );
    assert_eq!(ping_stats["attempts_last_hour"], 1);
    assert_eq!(ping_stats["failure_rate_last_hour"], 1.0);
    app.stop().await;
}

#[tokio::test]
async fn bad_operations_are_refused() {
    let app = spawn_app_with(false).await;
    let (status, _) = app
        .admin_json(Method::GET, "/admin/jobs?status=exploded", Value::Null)
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .admin_json(Method::POST, "/admin/jobs/replay", json!({ "filter": {} }))
        .await;
    assert_eq!(status, 400, "a reason is required");
    let (status, _) = app
        .admin_json(Method::GET, "/admin/jobs?limit=0", Value::Null)
        .await;
    assert_eq!(status, 400);
    let resp = app.http.get(app.url("/admin/jobs")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    app.stop().await;
}
