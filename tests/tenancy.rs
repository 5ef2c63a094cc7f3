//! Tenants, integrations and tokens through the admin API, and partner authentication.

mod common;

use common::{TestApp, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

async fn create_tenant(app: &TestApp, name: &str) -> String {
    let (status, body) = app
        .admin_json(Method::POST, "/admin/tenants", json!({ "name": name }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn whoami(app: &TestApp, token: &str) -> (u16, Value) {
    let resp = app
        .http
        .get(app.url("/v1/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn tenant_names_are_unique_and_validated() {
    let app = spawn_app_with(false).await;
    create_tenant(&app, "acme").await;
    let (status, body) = app
        .admin_json(Method::POST, "/admin/tenants", json!({ "name": " acme " }))
        .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")));
    // "   " is blank; Postgres cannot store U+0000 (once a 503 "database unavailable").
    for name in ["   ", "ac\u{0}me"] {
        let (status, body) = app
            .admin_json(Method::POST, "/admin/tenants", json!({ "name": name }))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{name:?}: {body}"
        );
    }
    let (status, list) = app
        .admin_json(Method::GET, "/admin/tenants", Value::Null)
        .await;
    assert_eq!(status, 200);
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("acme")]);
    app.stop().await;
}

#[tokio::test]
async fn integration_token_is_shown_once_stored_hashed_and_authenticates() {
    let app = spawn_app_with(false).await;
    let tenant = create_tenant(&app, "acme").await;
    let (status, created) = app
        .admin_json(
            Method::POST,
            &format!("/admin/tenants/{tenant}/integrations"),
            json!({ "kind": "imshop", "name": "shop app" }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();

    let (_, listed) = app
        .admin_json(
            Method::GET,
            &format!("/admin/tenants/{tenant}/integrations"),
            Value::Null,
        )
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(
        !listed.to_string().contains(&token),
        "tokens are never listed"
    );

    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM credentials")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!String::from_utf8_lossy(&stored[0]).contains(&token));

    let (status, me) = whoami(&app, &token).await;
    assert_eq!(status, 200);
    assert_eq!(me["tenant_id"].as_str(), Some(tenant.as_str()));
    assert_eq!(me["kind"], "imshop");
    // Absent, not null: the document does not allow null there.
    assert_eq!(me.get("user_id"), None, "{me}");
    app.stop().await;
}

#[tokio::test]
async fn user_tokens_carry_the_user_and_unknown_tokens_are_rejected() {
    let app = spawn_app_with(false).await;
    let tenant = create_tenant(&app, "conf").await;
    let (_, created) = app
        .admin_json(
            Method::POST,
            &format!("/admin/tenants/{tenant}/integrations"),
            json!({ "kind": "cc", "name": "compass" }),
        )
        .await;
    let integration = created["integration"]["id"].as_str().unwrap();
    let (status, user) = app
        .admin_json(
            Method::POST,
            &format!("/admin/integrations/{integration}/user-tokens"),
            json!({ "user_id": "user-42" }),
        )
        .await;
    assert_eq!(status, 200, "{user}");
    let (status, me) = whoami(&app, user["token"].as_str().unwrap()).await;
    assert_eq!((status, me["user_id"].as_str()), (200, Some("user-42")));

    let (status, body) = whoami(&app, "sl_not-a-real-token").await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let doc: Value = serde_json::from_str(&syncline::api::openapi_json()).unwrap();
    assert!(
        doc["paths"]["/v1/whoami"]["get"]["responses"]["401"].is_object(),
        "the document lists whoami's 401"
    );
    let (status, _) = whoami(&app, common::ADMIN_TOKEN).await;
    assert_eq!(status, 401, "the admin token is not a partner token");

    let (status, body) = app
        .admin_json(
            Method::POST,
            &format!("/admin/integrations/{}/user-tokens", uuid::Uuid::new_v4()),
            json!({ "user_id": "user-42" }),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    app.stop().await;
}

#[tokio::test]
async fn unknown_integration_kind_is_rejected_without_writing() {
    let app = spawn_app_with(false).await;
    let tenant = create_tenant(&app, "acme").await;
    let (status, body) = app
        .admin_json(
            Method::POST,
            &format!("/admin/tenants/{tenant}/integrations"),
            json!({ "kind": "ftp", "name": "x" }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM integrations")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
    app.stop().await;
}
