//! ALLIO → CRM through HTTP, real workers and the ALLIO simulator.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestApp, Workers, create_integration, create_tenant, spawn_app_with, test_worker_settings,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncline::simulators::allio::AllioSimulator;

const API_KEY: &str = "allio-api-key-for-tests";
const UUID: &str = "3f1c2a7e-9b1d-4c3e-8f5a-2b6d7e8f9a0b";
const WAIT: Duration = Duration::from_secs(30);

struct Allio {
    app: TestApp,
    sim: AllioSimulator,
    base: String,
    integration: String,
    token: String,
}

async fn allio() -> Allio {
    let app = spawn_app_with(false).await;
    let tenant = create_tenant(&app, "crm").await;
    let (integration, token) = create_integration(&app, &tenant, "allio").await;
    let (sim, base) = AllioSimulator::start(API_KEY).await.unwrap();
    let a = Allio {
        app,
        sim,
        base,
        integration,
        token,
    };
    a.configure(true, true).await;
    a
}

impl Allio {
    async fn configure(&self, active: bool, delete_sync: bool) {
        let resp = self
            .app
            .admin(
                Method::PUT,
                &format!("/admin/integrations/{}/allio", self.integration),
            )
            .json(&json!({
                "integration_uuid": UUID, "api_base_url": self.base, "api_key": API_KEY,
                "active": active, "delete_sync": delete_sync,
            }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert_eq!(status, 204, "{}", resp.text().await.unwrap_or_default());
    }

    async fn webhook_to(&self, token: &str, body: Value) -> (u16, Value) {
        let resp = self
            .app
            .http
            .post(self.app.url(&format!("/allio/webhook/{token}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn webhook(&self, command: &str, ids: &[i64]) -> i64 {
        let (status, body) = self
            .webhook_to(
                &self.token,
                json!({ "uuid": UUID, "command": command, "indexes": ids }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["webhook_id"].as_i64().unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.app.db.pool)
            .await
            .unwrap()
    }

    /// Waits until no task is new or processing, moving scheduled retries to now.
    async fn settle(&self) {
        let start = Instant::now();
        loop {
            let open = self.count("SELECT count(*) FROM allio_tasks WHERE status IN (0, 1) AND command NOT LIKE '%\\_DEL'").await;
            let busy = self
                .count("SELECT count(*) FROM jobs WHERE queue LIKE 'allio.%' AND state IN ('available', 'scheduled', 'running')")
                .await;
            let retrying = self
                .count(
                    "SELECT count(*) FROM jobs WHERE queue LIKE 'allio.%' AND state = 'retryable'",
                )
                .await;
            if open == 0 && busy == 0 && retrying == 0 {
                return;
            }
            sqlx::query(
                "UPDATE jobs SET run_at = now() WHERE queue LIKE 'allio.%' AND state = 'retryable'",
            )
            .execute(&self.app.db.pool)
            .await
            .unwrap();
            assert!(start.elapsed() < WAIT, "ALLIO work never settled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn valid_webhook_is_stored_once_with_its_ingest_job() {
    let a = allio().await;
    let id = a.webhook("RESERVE_ADD", &[111, 222]).await;
    let (command, ids, uuid): (String, String, uuid::Uuid) = sqlx::query_as(
        "SELECT command, external_ids_array, integration_uuid FROM allio_webhook WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&a.app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (command.as_str(), ids.as_str(), uuid.to_string().as_str()),
        ("RESERVE_ADD", "[111,222]", UUID)
    );
    assert_eq!(a.count("SELECT count(*) FROM allio_webhook").await, 1);
    assert_eq!(
        a.count("SELECT count(*) FROM jobs WHERE queue = 'allio.ingest'")
            .await,
        1
    );
    assert!(a.sim.arrivals().is_empty(), "the handler never calls ALLIO");
    a.app.stop().await;
}

#[tokio::test]
async fn invalid_webhooks_get_4xx_and_store_nothing() {
    let a = allio().await;
    let good = json!({ "uuid": UUID, "command": "RESERVE_ADD", "indexes": [1] });
    let cases: Vec<(&str, Value, u16)> = vec![
        ("sl_unknown-token", good.clone(), 404),
        (
            &a.token,
            json!({ "uuid": uuid::Uuid::new_v4().to_string(), "command": "RESERVE_ADD", "indexes": [1] }),
            400,
        ),
        (
            &a.token,
            json!({ "uuid": "not-a-uuid", "command": "RESERVE_ADD", "indexes": [1] }),
            400,
        ),
        (
            &a.token,
            json!({ "uuid": UUID, "command": "RESERVE_ADD", "indexes": ["1"] }),
            400,
        ),
        (
            &a.token,
            json!({ "uuid": UUID, "command": "RESERVE_ADD", "indexes": [1.5] }),
            400,
        ),
        (
            &a.token,
            json!({ "uuid": UUID, "command": "RESERVE_ADD", "indexes": [-4] }),
            400,
        ),
        (
            &a.token,
            json!({ "uuid": UUID, "command": "RESERVE_ADD" }),
            400,
        ),
        (
            &a.token,
            json!({ "uuid": UUID, "command": "", "indexes": [1] }),
            400,
        ),
        (
            &a.token,
            json!({ "uuid": UUID, "command": 7, "indexes": [1] }),
            400,
        ),
        (&a.token, json!([1, 2]), 400),
    ];
    for (token, body, status) in cases {
        let (got, answer) = a.webhook_to(token, body.clone()).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert!(answer["code"].is_string(), "JSON error body: {answer}");
    }
    a.configure(false, false).await;
    let (got, answer) = a.webhook_to(&a.token, good).await;
    assert_eq!(
        (got, answer["code"].as_str()),
        (403, Some("forbidden")),
        "inactive integration"
    );
    assert_eq!(a.count("SELECT count(*) FROM allio_webhook").await, 0);
    assert_eq!(a.count("SELECT count(*) FROM jobs").await, 0);
    a.app.stop().await;
}

#[tokio::test]
async fn webhook_to_tasks_to_fetch_to_crm_rows_with_mapped_fields() {
    let a = allio().await;
    a.webhook("RESERVE_ADD", &[7, 8]).await;
    a.webhook("DEALCARD_MOD", &[9]).await;
    a.webhook("SPACE_CHANGED", &[1]).await;
    let workers = Workers::start(&a.app.db.pool, test_worker_settings("allio"));
    a.settle().await;
    workers.stop().await;

    assert_eq!(
        a.count("SELECT count(*) FROM allio_tasks WHERE status = 2")
            .await,
        2
    );
    assert_eq!(
        a.count("SELECT count(*) FROM allio_webhook WHERE ignored AND command = 'SPACE_CHANGED'")
            .await,
        1
    );
    assert_eq!(
        a.count("SELECT count(*) FROM allio_webhook WHERE processed_at IS NULL")
            .await,
        0
    );
    let (fields, created, phone, first): (Value, String, String, Value) = sqlx::query_as(
        "SELECT r.custom_fields, r.created_at::text, c.phone, c.custom_fields -> 'first'
         FROM crm_reservations r JOIN crm_contacts c ON c.id = r.contact_id WHERE r.external_id = '7'",
    )
    .fetch_one(&a.app.db.pool)
    .await
    .unwrap();
    let expected = syncline::simulators::allio::object("reserve", 7);
    assert_eq!(fields["status"], expected["status"]);
    assert_eq!(fields["manager.fullname"], expected["manager"]["fullname"]);
    assert_eq!(fields["manager.city"], expected["manager"]["city"]);
    assert_eq!(fields["comment"], expected["comment"]);
    assert_eq!(created, "2025-10-08 20:08:10+00");
    assert_eq!(phone, "#ERROR!", "junk phones are kept as they are");
    assert_eq!(first, expected["client"]["first"]);
    assert_eq!(a.count("SELECT count(*) FROM crm_deals d JOIN crm_contacts c ON c.id = d.contact_id WHERE d.external_id = '9'").await, 1);
    assert_eq!(
        a.count(
            "SELECT count(*) FROM change_log WHERE entity IN ('reservation', 'deal', 'contact')"
        )
        .await,
        6
    );
    a.app.stop().await;
}

#[tokio::test]
async fn duplicate_deliveries_do_not_duplicate_crm_rows() {
    let a = allio().await;
    a.webhook("RESERVE_ADD", &[1, 2]).await;
    a.webhook("RESERVE_ADD", &[1, 2]).await;
    let workers = Workers::start(&a.app.db.pool, test_worker_settings("allio"));
    a.settle().await;
    // Running the ingest of the first webhook again creates no task either.
    let mut tx = a.app.db.pool.begin().await.unwrap();
    let first: i64 = sqlx::query_scalar("SELECT min(id) FROM allio_webhook")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    syncline_jobs::core::enqueue(
        &mut tx,
        &syncline_jobs::allio_ingest::Ingest { webhook_id: first },
        Default::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    a.settle().await;
    workers.stop().await;
    assert_eq!(
        a.count("SELECT count(*) FROM allio_webhook").await,
        2,
        "each delivery is recorded"
    );
    assert_eq!(a.count("SELECT count(*) FROM allio_tasks").await, 2);
    assert_eq!(a.count("SELECT count(*) FROM crm_reservations").await, 2);
    assert_eq!(a.count("SELECT count(*) FROM crm_contacts").await, 2);
    assert_eq!(
        a.count("SELECT count(*) FROM change_log WHERE entity = 'reservation'")
            .await,
        2,
        "unchanged rows are not logged again"
    );
    a.app.stop().await;
}

#[tokio::test]
async fn a_503_is_retried_and_then_succeeds() {
    let a = allio().await;
    a.sim.fail_next(StatusCode::SERVICE_UNAVAILABLE, 1);
    a.webhook("RESERVE_ADD", &[5]).await;
    let workers = Workers::start(&a.app.db.pool, test_worker_settings("allio"));
    a.settle().await;
    workers.stop().await;
    assert_eq!(
        a.count("SELECT count(*) FROM allio_tasks WHERE status = 2")
            .await,
        1
    );
    assert_eq!(a.count("SELECT count(*) FROM crm_reservations").await, 1);
    let statuses: Vec<u16> = a.sim.arrivals().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200]);
    a.app.stop().await;
}

#[tokio::test]
async fn a_permanent_4xx_fails_the_task_with_its_error() {
    let a = allio().await;
    a.sim.fail_next(StatusCode::BAD_REQUEST, 1);
    a.webhook("DEALCARD_ADD", &[5]).await;
    let workers = Workers::start(&a.app.db.pool, test_worker_settings("allio"));
    a.settle().await;
    workers.stop().await;
    let (status, error): (i16, Option<String>) =
        sqlx::query_as("SELECT status, error FROM allio_tasks")
            .fetch_one(&a.app.db.pool)
            .await
            .unwrap();
    assert_eq!((status, error.as_deref()), (3, Some("HTTP 400")));
    assert_eq!(a.sim.arrivals().len(), 1, "not retried");
    a.app.stop().await;
}

#[tokio::test]
async fn a_task_stuck_in_processing_by_a_dead_worker_returns_and_completes() {
    let a = allio().await;
    a.webhook("RESERVE_ADD", &[3]).await;
    let workers = Workers::start(&a.app.db.pool, test_worker_settings("allio"));
    a.settle().await;
    workers.stop().await;
    // Pretend a worker claimed a second task long ago and died.
    sqlx::query(
        "INSERT INTO allio_tasks (integration_id, webhook_id, part, command, entity, external_ids, status, claimed_by, claimed_at)
         SELECT integration_id, webhook_id, 1, command, entity, '[4]', 1, 'dead-job', now() - interval '1 hour' FROM allio_tasks",
    )
    .execute(&a.app.db.pool)
    .await
    .unwrap();
    let integration: uuid::Uuid = a.integration.parse().unwrap();
    let mut tx = a.app.db.pool.begin().await.unwrap();
    syncline_jobs::allio_fetch::enqueue_fetch(&mut tx, integration)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let workers = Workers::start(&a.app.db.pool, test_worker_settings("allio"));
    a.settle().await;
    workers.stop().await;
    assert_eq!(
        a.count("SELECT count(*) FROM allio_tasks WHERE status = 2")
            .await,
        2
    );
    assert_eq!(
        a.count("SELECT count(*) FROM crm_reservations WHERE external_id = '4'")
            .await,
        1
    );
    a.app.stop().await;
}

#[tokio::test]
async fn fetches_from_several_workers_stay_within_two_requests_per_second() {
    let a = allio().await;
    let ids: Vec<i64> = (1..=700).collect();
    a.webhook("RESERVE_ADD", &ids).await;
    a.webhook("DEALCARD_ADD", &ids[..300]).await;
    let pool = &a.app.db.pool;
    // The workers share one pacer set a little under the simulator's limit: the margin
    // absorbs this machine's scheduling jitter between a slot and the request's arrival
    // (how close to 2 req/s pacing gets is `cargo bench --bench allio_pacing`'s
    // question). Unshared pacing would send three times the rate.
    let many: Vec<Workers> = (0..3)
        .map(|n| {
            let mut settings = test_worker_settings(&format!("w{n}"));
            settings.partners.allio_rate_per_sec = 1.8;
            Workers::start(pool, settings)
        })
        .collect();
    a.settle().await;
    for w in many {
        w.stop().await;
    }
    let arrivals = a.sim.arrivals();
    assert_eq!(
        arrivals.len(),
        10,
        "7 + 3 requests of at most 100 ids, none refused: {:?}",
        arrivals
            .iter()
            .map(|r| (r.entity.clone(), r.ids, r.status))
            .collect::<Vec<_>>()
    );
    assert!(arrivals.iter().all(|r| r.status == 200 && r.ids <= 100));
    for (i, later) in arrivals.iter().enumerate().skip(2) {
        let gap = later.at.duration_since(arrivals[i - 2].at);
        assert!(gap >= Duration::from_secs(1), "3 requests within {gap:?}");
    }
    assert_eq!(a.count("SELECT count(*) FROM crm_reservations").await, 700);
    a.app.stop().await;
}

#[tokio::test]
async fn delete_sweep_removes_deleted_entities_once_a_day() {
    let a = allio().await;
    a.webhook("RESERVE_ADD", &[1, 2, 3]).await;
    let workers = Workers::start(&a.app.db.pool, test_worker_settings("allio"));
    a.settle().await;
    a.webhook("RESERVE_DEL", &[1, 2]).await;
    a.settle().await;
    assert_eq!(
        a.count("SELECT count(*) FROM crm_reservations").await,
        3,
        "deletes wait for the sweep"
    );

    // Two schedulers firing the daily job: still one sweep for the integration today.
    let mut tx = a.app.db.pool.begin().await.unwrap();
    for _ in 0..2 {
        syncline_jobs::core::enqueue(
            &mut tx,
            &syncline_jobs::allio_delete_sweep::DeleteSweepAll::default(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let start = Instant::now();
    while a
        .count("SELECT count(*) FROM allio_tasks WHERE command = 'RESERVE_DEL' AND status = 2")
        .await
        == 0
    {
        assert!(start.elapsed() < WAIT, "sweep never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.stop().await;
    assert_eq!(
        a.count("SELECT count(*) FROM jobs WHERE queue = 'allio.delete_sweep'")
            .await,
        1
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT external_id FROM crm_reservations")
        .fetch_all(&a.app.db.pool)
        .await
        .unwrap();
    assert_eq!(left, ["3"]);
    assert_eq!(a.count("SELECT count(*) FROM change_log WHERE entity = 'reservation' AND change_type = 'delete'").await, 2);
    a.app.stop().await;
}

#[tokio::test]
async fn delete_sweep_deletes_nothing_with_the_switch_off() {
    let a = allio().await;
    a.webhook("RESERVE_ADD", &[1]).await;
    a.webhook("RESERVE_DEL", &[1]).await;
    let workers = Workers::start(&a.app.db.pool, test_worker_settings("allio"));
    a.settle().await;
    a.configure(true, false).await;
    let (status, body) = a
        .app
        .admin_json(
            Method::POST,
            &format!("/admin/integrations/{}/allio/delete-sweep", a.integration),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let job = a
        .app
        .wait_for_job(body["job_id"].as_str().unwrap(), WAIT, |j| {
            j["status"] == "completed"
        })
        .await;
    workers.stop().await;
    assert_eq!(job["queue"], "allio.delete_sweep");
    assert_eq!(a.count("SELECT count(*) FROM crm_reservations").await, 1);
    assert_eq!(
        a.count("SELECT count(*) FROM allio_tasks WHERE command = 'RESERVE_DEL' AND status = 0")
            .await,
        1
    );
    a.app.stop().await;
}
