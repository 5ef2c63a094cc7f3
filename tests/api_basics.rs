//! The HTTP surface every route shares: probes, the error envelope, limits, the
//! OpenAPI document.

mod common;

use common::spawn_app_with;
use reqwest::Method;
use serde_json::{Value, json};

async fn error_body(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("error body is JSON");
    assert!(body["message"].is_string(), "message present: {body}");
    (
        status,
        body["code"].as_str().expect("code present").to_owned(),
    )
}

#[tokio::test]
async fn probes_report_process_and_database() {
    let app = spawn_app_with(false).await;
    let health: Value = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_503_when_the_database_is_gone() {
    let app = spawn_app_with(false).await;
    app.db.pool.close().await;
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    app.stop().await;
}

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let app = spawn_app_with(false).await;
    let resp = app
        .http
        .get(app.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(resp).await, (404, "not_found".into()));
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_is_a_json_400_and_writes_nothing() {
    let app = spawn_app_with(false).await;
    let resp = app
        .admin(Method::POST, "/admin/tenants")
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(resp).await, (400, "invalid_request".into()));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
    app.stop().await;
}

#[tokio::test]
async fn wrong_content_type_is_a_json_415() {
    let app = spawn_app_with(false).await;
    let resp = app
        .admin(Method::POST, "/admin/tenants")
        .header("content-type", "text/plain")
        .body("name=acme")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(resp).await,
        (415, "unsupported_media_type".into())
    );
    let resp = app
        .admin(Method::POST, "/admin/tenants")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(resp).await,
        (415, "unsupported_media_type".into()),
        "no Content-Type at all"
    );
    for status in ["413", "415"] {
        assert!(
            document()["paths"]["/admin/tenants"]["post"]["responses"][status].is_object(),
            "the document lists {status}"
        );
    }
    app.stop().await;
}

fn document() -> Value {
    serde_json::from_str(&syncline::api::openapi_json()).unwrap()
}

#[test]
fn every_path_variable_is_a_declared_path_parameter() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let variables: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, operation) in item.as_object().unwrap() {
            let mut declared: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            declared.sort_unstable();
            let mut expected = variables.clone();
            expected.sort_unstable();
            assert_eq!(declared, expected, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn oversized_body_is_a_json_413_declared_or_chunked() {
    let app = spawn_app_with(false).await;
    let big = json!({ "name": "x".repeat(70_000) }).to_string();
    let resp = app
        .admin(Method::POST, "/admin/tenants")
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(resp).await, (413, "payload_too_large".into()));

    let chunks = futures_chunks(big);
    let resp = app
        .admin(Method::POST, "/admin/tenants")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(resp).await, (413, "payload_too_large".into()));
    app.stop().await;
}

fn futures_chunks(text: String) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let parts: Vec<_> = text
        .into_bytes()
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    futures::stream::iter(parts)
}

#[tokio::test]
async fn admin_routes_reject_missing_and_wrong_tokens() {
    let app = spawn_app_with(false).await;
    let none = app
        .http
        .get(app.url("/admin/tenants"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(none).await, (401, "unauthorized".into()));
    let wrong = app
        .http
        .get(app.url("/admin/tenants"))
        .bearer_auth("test-admin-token-0123456780")
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(wrong).await, (401, "unauthorized".into()));
    app.stop().await;
}

#[tokio::test]
async fn served_openapi_document_matches_the_committed_one() {
    let app = spawn_app_with(false).await;
    let served = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    assert_eq!(
        served, committed,
        "openapi/openapi.json drifted from the code: run `cargo run -- openapi`"
    );
    assert_eq!(syncline::api::openapi_json(), committed);
    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    app.stop().await;
}
