//! Changes-feed webhooks against a real local receiver.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestApp, Workers, create_integration, create_tenant, spawn_app_with, test_worker_settings,
};
use reqwest::Method;
use serde_json::{Value, json};
use syncline_jobs::{WorkerSettings, webhook_deliver::signature};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};

struct Hooks {
    app: TestApp,
    tenant: String,
    key: String,
    receiver: MockServer,
}

async fn hooks(answer: ResponseTemplate) -> Hooks {
    let app = spawn_app_with(false).await;
    let tenant = create_tenant(&app, "shop").await;
    let (_, key) = create_integration(&app, &tenant, "feed").await;
    let receiver = MockServer::start().await;
    Mock::given(any())
        .respond_with(answer)
        .mount(&receiver)
        .await;
    Hooks {
        app,
        tenant,
        key,
        receiver,
    }
}

fn ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_string("ok")
}

/// Fast retries: the whole 30 s … 8 h schedule in about six seconds.
fn quick_retries() -> WorkerSettings {
    let mut settings = test_worker_settings("hooks");
    settings.retry_delay_scale = 0.0001;
    settings
}

impl Hooks {
    async fn call(&self, method: &str, body: Value) -> (u16, Value) {
        let resp = self
            .app
            .http
            .post(self.app.url(&format!("/v1/shop.Webhook/{method}")))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn create(&self) -> (String, String) {
        let (status, body) = self
            .call("CreateWebhook", json!({ "url": format!("{}/hook?token=abc", self.receiver.uri()), "entities": ["product"], "fields": [], "metadata": "m" }))
            .await;
        assert_eq!(status, 200, "{body}");
        (
            body["id"].as_str().unwrap().to_owned(),
            body["secret"].as_str().unwrap().to_owned(),
        )
    }

    async fn change(&self, count: usize) {
        sqlx::query(
            "INSERT INTO change_log (tenant_id, entity, entity_id, change_type, latest, changed)
             SELECT $1::uuid, 'product', 'p' || n, 'update', jsonb_build_object('n', n), '{}' FROM generate_series(1, $2) n",
        )
        .bind(&self.tenant)
        .bind(count as i32)
        .execute(&self.app.db.pool)
        .await
        .unwrap();
    }

    async fn state(&self) -> Value {
        let (status, body) = self.call("GetWebhooks", json!({})).await;
        assert_eq!(status, 200);
        body["webhooks"][0]["states"].clone()
    }

    async fn wait_until(&self, what: &str, check: impl AsyncFn() -> bool) {
        let start = Instant::now();
        while !check().await {
            if start.elapsed() >= Duration::from_secs(30) {
                let attempts: Vec<(Option<i32>, Option<String>)> =
                    sqlx::query_as("SELECT resp_status, error FROM webhook_attempts ORDER BY id")
                        .fetch_all(&self.app.db.pool)
                        .await
                        .unwrap();
                panic!(
                    "never: {what}; state {}; attempts {attempts:?}",
                    self.state().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn received(&self) -> Vec<wiremock::Request> {
        self.receiver.received_requests().await.unwrap()
    }
}

#[tokio::test]
async fn changes_are_delivered_signed_in_order_and_in_batches_of_1000() {
    let h = hooks(ok()).await;
    let (id, secret) = h.create().await;
    h.change(1500).await;
    let workers = Workers::start(&h.app.db.pool, test_worker_settings("hooks"));
    h.wait_until("two deliveries", async || h.received().await.len() == 2)
        .await;
    workers.stop().await;

    let requests = h.received().await;
    let mut numbers = Vec::new();
    for request in &requests {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        let expected = signature(
            &secret,
            &header("webhook-id"),
            header("webhook-timestamp").parse().unwrap(),
            std::str::from_utf8(&request.body).unwrap(),
        );
        assert_eq!(header("webhook-signature"), expected);
        assert_eq!(body["id"], header("webhook-id"));
        for change in body["changes"].as_array().unwrap() {
            assert_eq!(change["entity"], "product");
            assert_eq!(change["change_type"], "update");
            assert!(change["time"].is_string() && change["changed"].is_object());
            numbers.push(change["latest"]["n"].as_i64().unwrap());
        }
    }
    assert_eq!(
        serde_json::from_slice::<Value>(&requests[0].body).unwrap()["changes"]
            .as_array()
            .unwrap()
            .len(),
        1000
    );
    assert_eq!(
        numbers,
        (1..=1500).collect::<Vec<_>>(),
        "every change once, in order"
    );
    let state = h.state().await;
    assert_eq!(state["state"], "ok");
    assert!(state["last_sent_at"].is_string());
    let attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_attempts WHERE webhook_id = $1::bigint AND resp_status = 200",
    )
    .bind(&id)
    .fetch_one(&h.app.db.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 2);
    h.app.stop().await;
}

#[tokio::test]
async fn a_401_puts_the_webhook_in_retry_with_the_seeds_last_error() {
    let h = hooks(ResponseTemplate::new(401).set_body_string("who are you")).await;
    h.create().await;
    h.change(1).await;
    let workers = Workers::start(&h.app.db.pool, test_worker_settings("hooks"));
    h.wait_until("state retry", async || h.state().await["state"] == "retry")
        .await;
    workers.stop().await;
    let error = &h.state().await["last_error"];
    assert_eq!(error["error"], "unexpected status: 401");
    assert_eq!(error["resp_status"], 401);
    assert_eq!(error["resp_body"], "who are you");
    assert_eq!(error["retried"], 1);
    assert!(error["sent_at"].is_string());
    h.app.stop().await;
}

#[tokio::test]
async fn persistent_failure_stops_the_webhook_and_resume_restarts_it() {
    let h = hooks(ResponseTemplate::new(200).set_body_string("not ok")).await;
    let (id, _) = h.create().await;
    h.change(1).await;
    let workers = Workers::start(&h.app.db.pool, quick_retries());
    h.wait_until("state stop", async || h.state().await["state"] == "stop")
        .await;
    let sent = h.received().await.len();
    assert_eq!(sent, 12, "the first try and 11 retries");
    h.change(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.received().await.len(),
        sent,
        "a stopped webhook gets nothing"
    );

    h.receiver.reset().await;
    Mock::given(any())
        .respond_with(ok())
        .mount(&h.receiver)
        .await;
    let (status, _) = h
        .app
        .admin_json(
            Method::POST,
            &format!("/admin/webhooks/{id}/resume"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200);
    // Resuming sets `ok` at once; wait for the delivery itself.
    h.wait_until("resumed delivery", async || {
        let ok: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_attempts WHERE resp_status = 200 AND error IS NULL",
        )
        .fetch_one(&h.app.db.pool)
        .await
        .unwrap();
        ok >= 1
    })
    .await;
    assert_eq!(h.state().await["state"], "ok");
    workers.stop().await;
    let body: Value = serde_json::from_slice(&h.received().await[0].body).unwrap();
    assert_eq!(
        body["changes"].as_array().unwrap().len(),
        2,
        "what piled up is delivered"
    );
    h.app.stop().await;
}

#[tokio::test]
async fn a_deleted_webhook_receives_nothing_more() {
    let h = hooks(ok()).await;
    let (id, _) = h.create().await;
    let (status, _) = h.call("DeleteWebhook", json!({ "id": id })).await;
    assert_eq!(status, 200);
    h.change(3).await;
    let workers = Workers::start(&h.app.db.pool, test_worker_settings("hooks"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    workers.stop().await;
    assert!(h.received().await.is_empty());
    let (_, list) = h.call("GetWebhooks", json!({})).await;
    assert_eq!(list["webhooks"], json!([]));
    let (status, _) = h.call("DeleteWebhook", json!({ "id": id })).await;
    assert_eq!(status, 404);
    h.app.stop().await;
}

#[tokio::test]
async fn webhook_registrations_are_validated_and_limited() {
    let h = hooks(ok()).await;
    for body in [
        json!({ "url": "ftp://example.test/x", "entities": ["product"] }),
        json!({ "url": "http://user:pw@127.0.0.1/x", "entities": ["product"] }),
        json!({ "url": "not a url", "entities": ["product"] }),
        json!({ "url": h.receiver.uri(), "entities": ["orders"] }),
        json!({ "url": h.receiver.uri(), "entities": [] }),
        json!({ "url": h.receiver.uri() }),
    ] {
        let (status, answer) = h.call("CreateWebhook", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    for _ in 0..20 {
        h.create().await;
    }
    let (status, answer) = h
        .call(
            "CreateWebhook",
            json!({ "url": h.receiver.uri(), "entities": ["deal"] }),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_request")),
        "limit of 20"
    );
    h.app.stop().await;
}
