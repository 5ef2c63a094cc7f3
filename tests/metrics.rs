//! `/metrics` follows job transitions (one test per binary: the counters are process-wide).

mod common;

use std::time::Duration;

use common::spawn_app;
use reqwest::Method;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};

async fn scrape(app: &common::TestApp) -> String {
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_reflect_job_transitions_calls_and_requests() {
    let app = spawn_app().await;
    let peer = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(400))
        .mount(&peer)
        .await;
    let (_, ping) = app
        .admin_json(
            Method::POST,
            "/admin/jobs/ping",
            json!({ "url": peer.uri() }),
        )
        .await;
    let (_, noop) = app
        .admin_json(Method::POST, "/admin/jobs/noop", Value::Null)
        .await;
    let ping = ping["job_id"].as_str().unwrap().to_owned();
    app.wait_for_job(&ping, Duration::from_secs(20), |j| {
        j["status"] == "discarded"
    })
    .await;
    app.wait_for_job(
        noop["job_id"].as_str().unwrap(),
        Duration::from_secs(20),
        |j| j["status"] == "completed",
    )
    .await;

    let m = scrape(&app).await;
    assert_eq!(
        value(&m, r#"syncline_jobs{queue="demo.ping",status="discarded"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&m, r#"syncline_jobs{queue="demo.noop",status="completed"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            r#"syncline_job_attempts_total{queue="demo.ping",outcome="discarded"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            r#"syncline_outbound_calls_total{queue="demo.ping",outcome="permanent"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            r#"syncline_job_duration_seconds_count{queue="demo.noop"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            r#"syncline_http_requests_total{method="POST",route="/admin/jobs/ping",status="200"}"#
        ),
        Some(1.0)
    );

    peer.reset().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&peer)
        .await;
    let (status, _) = app
        .admin_json(
            Method::POST,
            "/admin/jobs/replay",
            json!({ "filter": { "ids": [ping] }, "reason": "peer fixed" }),
        )
        .await;
    assert_eq!(status, 200);
    app.wait_for_job(&ping, Duration::from_secs(20), |j| {
        j["status"] == "completed"
    })
    .await;
    let m = scrape(&app).await;
    assert_eq!(
        value(&m, r#"syncline_jobs{queue="demo.ping",status="completed"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&m, r#"syncline_jobs{queue="demo.ping",status="discarded"}"#),
        None
    );
    assert_eq!(
        value(
            &m,
            r#"syncline_outbound_calls_total{queue="demo.ping",outcome="ok"}"#
        ),
        Some(1.0)
    );

    // Requests are counted by the route pattern matched (poem names path parameters
    // `:param0`, `:param1`...), never by a path that may carry an id or a token; paths
    // no route matches share one label.
    let token = "sl_metricsTokenThatMustNotAppear";
    let resp = app
        .http
        .post(app.url(&format!("/allio/webhook/{token}")))
        .json(&json!({ "uuid": "x", "command": "SPACE_CHANGED", "indexes": [1] }))
        .send()
        .await
        .unwrap();
    let webhook_status = resp.status().as_u16();
    assert!((400..500).contains(&webhook_status), "{webhook_status}");
    let resp = app
        .http
        .get(app.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let m = scrape(&app).await;
    assert!(!m.contains(token));
    assert_eq!(
        value(
            &m,
            &format!(
                r#"syncline_http_requests_total{{method="POST",route="/allio/webhook/:param0",status="{webhook_status}"}}"#
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            r#"syncline_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        Some(1.0)
    );
    assert!(
        value(
            &m,
            r#"syncline_http_requests_total{method="GET",route="/admin/jobs/:param0",status="200"}"#
        )
        .is_some_and(|n| n >= 1.0)
    );
    app.stop().await;
}
