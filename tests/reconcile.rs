//! `favourites.reconcile` against the Conference Compass simulator (a real HTTP server).

mod common;

use std::time::Duration;

use common::{TestApp, Workers, create_tenant, outcomes, spawn_app_with, test_worker_settings};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncline::simulators::cc::CcSimulator;
use syncline_jobs::reconcile::WireItem;

const WAIT: Duration = Duration::from_secs(20);
const REMOTE_TOKEN: &str = "remote-token-of-u1";

struct Setup {
    app: TestApp,
    sim: CcSimulator,
    source: String,
    imshop: String,
}

/// A tenant with an IMSHOP integration and a remote source served by the simulator,
/// with workers stopped until `start_workers`.
async fn setup() -> Setup {
    let app = spawn_app_with(false).await;
    let tenant = create_tenant(&app, "shop").await;
    let (_, imshop) = common::create_integration(&app, &tenant, "imshop").await;
    let (sim, base) = CcSimulator::start().await.unwrap();
    let (status, body) = app
        .admin_json(
            Method::POST,
            &format!("/admin/tenants/{tenant}/favourite-sources"),
            json!({ "name": "remote app", "base_url": base }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let source = body["id"].as_str().unwrap().to_owned();
    Setup {
        app,
        sim,
        source,
        imshop,
    }
}

fn wire(item: &str, action: &str, date: &str) -> WireItem {
    WireItem {
        item: item.into(),
        action: action.into(),
        action_date: date.into(),
    }
}

impl Setup {
    async fn link_user(&self) {
        let resp = self
            .app
            .admin(
                Method::PUT,
                &format!("/admin/favourite-sources/{}/users/u1/token", self.source),
            )
            .json(&json!({ "token": REMOTE_TOKEN }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }

    async fn imshop(&self, last_sync: i64, items: &[&str]) {
        let resp = self
            .app
            .http
            .post(self.app.url("/imshop/favorites"))
            .bearer_auth(&self.imshop)
            .json(&json!({ "userIdentifier": "u1", "lastSyncDate": last_sync, "itemIds": items }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    async fn reconcile_jobs(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT id FROM jobs WHERE queue = 'favourites.reconcile' ORDER BY id")
            .fetch_all(&self.app.db.pool)
            .await
            .unwrap()
    }

    async fn waiting_reconciles(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM jobs
             WHERE queue = 'favourites.reconcile' AND state IN ('available', 'scheduled', 'running')",
        )
        .fetch_one(&self.app.db.pool)
        .await
        .unwrap()
    }

    async fn reconcile_now(&self) -> String {
        let (status, body) = self
            .app
            .admin_json(
                Method::POST,
                &format!(
                    "/admin/favourite-sources/{}/users/u1/reconcile",
                    self.source
                ),
                Value::Null,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["job_id"].as_str().expect("a new job").to_owned()
    }

    async fn ours(&self) -> Vec<(String, String, i64)> {
        sqlx::query_as("SELECT item_id, action, action_ms FROM favourites WHERE user_id = 'u1' ORDER BY item_id")
            .fetch_all(&self.app.db.pool)
            .await
            .unwrap()
    }

    fn theirs(&self) -> Vec<(String, String, i64)> {
        let mut items: Vec<_> = self
            .sim
            .items(REMOTE_TOKEN)
            .unwrap_or_default()
            .into_iter()
            .map(|w| {
                let ms = syncline_domain::favourites::parse_action_date(&w.action_date).unwrap();
                (w.item, w.action, ms)
            })
            .collect();
        items.sort();
        items
    }

    async fn change_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM change_log")
            .fetch_one(&self.app.db.pool)
            .await
            .unwrap()
    }

    /// Waits for the job to end in `status`, moving any scheduled retry to now so the
    /// test need not wait out the backoff table.
    async fn finish(&self, id: &str, status: &str) -> Value {
        let start = std::time::Instant::now();
        loop {
            let job = self.app.job(id).await;
            if job["status"] == status {
                return job;
            }
            if job["status"] == "retryable" {
                sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
                    .bind(id)
                    .execute(&self.app.db.pool)
                    .await
                    .unwrap();
            }
            assert!(
                start.elapsed() < WAIT,
                "job never reached {status}: {job:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn reconcile_converges_both_sides_and_a_second_run_changes_nothing() {
    let s = setup().await;
    s.imshop(0, &["local-only", "shared"]).await;
    s.sim
        .seed_user(
            REMOTE_TOKEN,
            &[
                wire("remote-only", "ADD", "2020-01-01T00:00:00.000Z"),
                wire("shared", "DELETE", "2020-01-01T00:00:00.000Z"), // older than our ADD
            ],
        )
        .unwrap();
    s.link_user().await;
    let workers = Workers::start(&s.app.db.pool, test_worker_settings("reconcile"));
    let first = s.reconcile_jobs().await;
    assert_eq!(first.len(), 1, "linking the user queued one reconcile");
    s.finish(&first[0], "completed").await;

    let ours = s.ours().await;
    assert_eq!(ours, s.theirs(), "both sides hold the same states");
    let actions: Vec<_> = ours
        .iter()
        .map(|(i, a, _)| (i.as_str(), a.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("local-only", "ADD"),
            ("remote-only", "ADD"),
            ("shared", "ADD")
        ]
    );

    let changes = s.change_count().await;
    let served = s.sim.served();
    let again = s.reconcile_now().await;
    s.finish(&again, "completed").await;
    assert_eq!(
        s.change_count().await,
        changes,
        "no local change the second time"
    );
    assert_eq!(
        s.sim.served(),
        served + 1,
        "only the GET: nothing to post back"
    );
    assert_eq!(s.ours().await, s.theirs());
    workers.stop().await;
    s.app.stop().await;
}

#[tokio::test]
async fn reconcile_survives_two_503s_then_succeeds() {
    let s = setup().await;
    s.sim
        .seed_user(
            REMOTE_TOKEN,
            &[wire("r", "ADD", "2020-01-01T00:00:00.000Z")],
        )
        .unwrap();
    s.sim.fail_next(StatusCode::SERVICE_UNAVAILABLE, 2);
    s.link_user().await;
    let workers = Workers::start(&s.app.db.pool, test_worker_settings("reconcile"));
    let id = &s.reconcile_jobs().await[0];
    let job = s.finish(id, "completed").await;
    assert_eq!(
        outcomes(&job),
        ["retry_scheduled", "retry_scheduled", "completed"]
    );
    assert_eq!(job["attempt_history"][0]["error"], "HTTP 503");
    assert_eq!(s.ours().await, s.theirs());
    workers.stop().await;
    s.app.stop().await;
}

#[tokio::test]
async fn reconcile_stops_for_good_when_the_remote_rejects_the_token() {
    let s = setup().await;
    // The simulator knows no user with this token: it answers 401.
    s.link_user().await;
    let workers = Workers::start(&s.app.db.pool, test_worker_settings("reconcile"));
    let id = &s.reconcile_jobs().await[0];
    let job = s.finish(id, "discarded").await;
    assert_eq!(outcomes(&job), ["discarded"]);
    let error = job["attempt_history"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("rejected the user's token (HTTP 401)"),
        "{error}"
    );
    assert!(
        !error.contains(REMOTE_TOKEN),
        "the token is not in the error"
    );
    workers.stop().await;
    s.app.stop().await;
}

#[tokio::test]
async fn local_changes_queue_one_waiting_reconcile_per_user_and_source() {
    let s = setup().await;
    s.sim.seed_user(REMOTE_TOKEN, &[]).unwrap();
    s.link_user().await;
    s.imshop(0, &["a"]).await;
    s.imshop(chrono::Utc::now().timestamp_millis() + 1000, &["a", "b"])
        .await;
    assert_eq!(
        s.reconcile_jobs().await.len(),
        1,
        "de-duplicated while waiting"
    );

    let workers = Workers::start(&s.app.db.pool, test_worker_settings("reconcile"));
    let first = s.reconcile_jobs().await.remove(0);
    s.finish(&first, "completed").await;
    // The hourly sweep may queue one more at worker start; let everything settle.
    let start = std::time::Instant::now();
    while s.waiting_reconciles().await > 0 {
        assert!(start.elapsed() < WAIT, "reconciles never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.stop().await;
    assert_eq!(s.ours().await, s.theirs());

    // Once the job ran, a new local change queues a new one.
    s.imshop(chrono::Utc::now().timestamp_millis() + 2000, &["c"])
        .await;
    assert_eq!(s.waiting_reconciles().await, 1);
    s.app.stop().await;
}

#[tokio::test]
async fn the_periodic_sweep_queues_a_reconcile_for_every_linked_user() {
    let s = setup().await;
    s.sim
        .seed_user(
            REMOTE_TOKEN,
            &[wire("r", "ADD", "2020-01-01T00:00:00.000Z")],
        )
        .unwrap();
    s.link_user().await;
    let linked = s.reconcile_jobs().await;
    let mut tx = s.app.db.pool.begin().await.unwrap();
    let sweep = syncline_jobs::core::enqueue(
        &mut tx,
        &syncline_jobs::reconcile_sweep::ReconcileSweep::default(),
        Default::default(),
    )
    .await
    .unwrap()
    .unwrap();
    tx.commit().await.unwrap();
    let workers = Workers::start(&s.app.db.pool, test_worker_settings("sweep"));
    s.finish(&sweep, "completed").await;
    for id in s.reconcile_jobs().await {
        s.finish(&id, "completed").await;
    }
    let all = s.reconcile_jobs().await;
    assert!(
        all.len() >= linked.len(),
        "the sweep ran for the linked user"
    );
    assert_eq!(s.ours().await, s.theirs());
    workers.stop().await;
    s.app.stop().await;
}
