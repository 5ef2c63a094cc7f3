//! The admin dashboard: protected, lists discarded jobs (escaped), and its replay form works.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, spawn_app};
use reqwest::{Method, redirect::Policy};
use serde_json::json;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};

#[tokio::test]
async fn dashboard_lists_discarded_jobs_and_replays_them() {
    let app = spawn_app().await;
    let peer = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(400).set_body_string("<b>no</b>"))
        .mount(&peer)
        .await;
    let (_, body) = app
        .admin_json(
            Method::POST,
            "/admin/jobs/ping",
            json!({ "url": peer.uri() }),
        )
        .await;
    let id = body["job_id"].as_str().unwrap().to_owned();
    app.wait_for_job(&id, Duration::from_secs(20), |j| j["status"] == "discarded")
        .await;

    let browser = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let anonymous = browser.get(app.url("/admin/")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous.headers().get("www-authenticate").is_some(),
        "browsers are asked to sign in"
    );
    let wrong = browser
        .get(app.url("/admin/"))
        .basic_auth("ops", Some("not-the-token-0000"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let page = browser
        .get(app.url("/admin/"))
        .basic_auth("ops", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(&id), "the discarded job is listed");
    assert!(
        html.contains("HTTP 400: &lt;b&gt;no&lt;/b&gt;"),
        "partner text is escaped"
    );
    assert!(!html.contains("<b>no</b>"));
    let token = html
        .split("name=\"form_token\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();

    let forged = browser
        .post(app.url("/admin/ui/replay"))
        .basic_auth("ops", Some(ADMIN_TOKEN))
        .form(&[
            ("job_id", id.as_str()),
            ("reason", "x"),
            ("form_token", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    peer.reset().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&peer)
        .await;
    let replayed = browser
        .post(app.url("/admin/ui/replay"))
        .basic_auth("ops", Some(ADMIN_TOKEN))
        .form(&[
            ("job_id", id.as_str()),
            ("reason", "peer is back"),
            ("form_token", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 303);
    app.wait_for_job(&id, Duration::from_secs(20), |j| j["status"] == "completed")
        .await;
    app.stop().await;
}
