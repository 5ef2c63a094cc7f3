//! Losing the database. The API: every route that needs it answers 503 with
//! `{"code": "database_unavailable", ...}` within the pool's acquire timeout — never a
//! 500, never a hang — while `/healthz` still answers 200 and `/readyz` says 503. The
//! workers: they come back once it is reachable again. (`tools/chaos/db-restart` does
//! both against a real Postgres restart.)

mod common;

use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use syncline::{
    api::AppState,
    config::Config,
    db,
    hub::{self, Shutdown},
};
use syncline_jobs::{
    core::{EnqueueOptions, enqueue},
    noop::Noop,
};

const ADMIN_TOKEN: &str = "outage-admin-token-0123456789";

/// A pool with syncline's settings whose server is gone: nothing listens on its port, so
/// every connection attempt is refused, as while Postgres is down.
fn pool_without_server() -> sqlx::PgPool {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    db::pool_options(4)
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/gone"))
        .expect("lazy pool")
}

#[tokio::test]
async fn database_routes_answer_503_while_the_database_is_unreachable() {
    let config = Config::from_lookup(|_| None).expect("default config");
    let (acceptor, addr) = hub::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (_stop, shutdown) = Shutdown::manual();
    let state = AppState::new(pool_without_server(), ADMIN_TOKEN);
    tokio::spawn(async move { hub::serve(acceptor, state, &config, shutdown).await });
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");
    let integration = uuid::Uuid::new_v4();

    let requests: Vec<(&str, RequestBuilder)> = vec![
        (
            "ALLIO webhook",
            http.post(url("/allio/webhook/some-token"))
                .json(&json!({ "uuid": integration, "command": "RESERVE_ADD", "indexes": [1] })),
        ),
        (
            "Ergonode consume",
            http.put(url(&format!(
                "/ergonode/{integration}/consume/product_updated"
            )))
            .header("X-APP-TOKEN", "a.b.c")
            .json(&json!({ "resource_id": { "id": "SKU-1", "type": "sku" },
                           "synchronization": { "events": [] } })),
        ),
        (
            "IMSHOP favourites (token check)",
            http.post(url("/imshop/favorites"))
                .bearer_auth("some-partner-token")
                .json(&json!({ "userIdentifier": "u", "lastSyncDate": 0, "itemIds": [] })),
        ),
        (
            "whoami (token check)",
            http.get(url("/v1/whoami"))
                .bearer_auth("some-partner-token"),
        ),
        (
            "admin: create tenant",
            http.request(Method::POST, url("/admin/tenants"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "name": "acme" })),
        ),
        (
            "admin: job stats",
            http.get(url("/admin/jobs/stats")).bearer_auth(ADMIN_TOKEN),
        ),
    ];
    let answers =
        futures::future::join_all(requests.into_iter().map(|(what, request)| async move {
            let sent = Instant::now();
            let response = request
                .send()
                .await
                .expect("an answer, not a dropped connection");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (what, status, body, sent.elapsed())
        }))
        .await;

    let limit = db::ACQUIRE_TIMEOUT + Duration::from_secs(3);
    for (what, status, body, took) in answers {
        assert_eq!(status, 503, "{what}: {body}");
        assert_eq!(body["code"], "database_unavailable", "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        assert!(took < limit, "{what} took {took:?} to answer");
    }

    let health = http.get(url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "liveness does not need the database");
    let ready = http.get(url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "readiness reports the database");
}

#[tokio::test]
async fn workers_come_back_after_losing_the_database() {
    let db = common::TestDb::new().await;
    let workers = common::Workers::start(&db.pool, common::test_worker_settings("outage"));
    let registered =
        || sqlx::query_scalar::<_, i64>("SELECT count(*) FROM job_workers").fetch_one(&db.pool);
    let start = Instant::now();
    while registered().await.unwrap() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "workers never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The database goes away: its connections are cut and new ones refused, so every
    // heartbeat and fetch fails and apalis ends each worker.
    let mut server = reqwest::Url::parse(&db.url).unwrap();
    let database = server.path().trim_start_matches('/').to_owned();
    server.set_path("/postgres");
    let admin = db::connect_with_retry(server.as_str(), Duration::from_secs(10), 1)
        .await
        .unwrap();
    let allow = |yes: bool| format!("ALTER DATABASE {database} ALLOW_CONNECTIONS {yes}");
    sqlx::query(sqlx::AssertSqlSafe(allow(false)))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&admin)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    sqlx::query(sqlx::AssertSqlSafe(allow(true)))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;

    // Back: a job queued now still runs.
    let mut tx = db.pool.begin().await.unwrap();
    let id = enqueue(&mut tx, &Noop::default(), EnqueueOptions::default())
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    let status = || {
        sqlx::query_scalar::<_, String>("SELECT state::text FROM jobs WHERE id = $1")
            .bind(&id)
            .fetch_one(&db.pool)
    };
    let start = Instant::now();
    while status().await.unwrap() != "completed" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the job queued after the outage never ran: the workers did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workers.stop().await;
}
