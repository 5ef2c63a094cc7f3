//! API intake benchmark: requests/s and latency of the partner endpoints that store and
//! enqueue — IMSHOP favourites sync (a locked read-modify-write per user), the ALLIO
//! webhook and the Ergonode consume endpoint — against `GET /healthz` as the baseline of
//! the HTTP stack itself, in the same run. The client runs in the same process as the
//! server on this (2-core) machine, so the figures are a floor, not a ceiling.
//!
//! Run with `cargo bench --bench intake` (`DATABASE_URL` or an embedded cluster).

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::json;
use support::{
    Report, Row, Server, admin, run_in_fresh_database, show_engine_warnings, start_api, tenant_with,
};

const ADMIN: &str = "bench-admin-token-0123456789";
const REQUESTS: usize = 4_000;
const CONCURRENCY: [usize; 2] = [16, 64];
const USERS: usize = 1_000;
const ALLIO_UUID: &str = "3f1c2a7e-9b1d-4c3e-8f5a-2b6d7e8f9a0b";
const ERGONODE_SECRET: &str = "bench-ergonode-shared-secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    show_engine_warnings();
    let server = Server::start().await?;
    println!(
        "postgres: {}; client and server in one process",
        server.describe()
    );
    let outcome = run_in_fresh_database(&server, |url| async move { scenarios(&url).await }).await;
    server.stop();
    outcome?.print();
    Ok(())
}

/// One request of a scenario, by its index.
type Build = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

async fn scenarios(url: &str) -> anyhow::Result<Report> {
    let pool = syncline::db::connect_with_retry(url, Duration::from_secs(30), 40).await?;
    syncline::db::migrate::run(&pool).await?;
    let (base, stop) = start_api(&pool, ADMIN).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()?;

    let (_, _, imshop) = tenant_with(&http, &base, ADMIN, "shop", "imshop").await?;
    let (_, allio_id, allio_token) = tenant_with(&http, &base, ADMIN, "crm", "allio").await?;
    admin(&http, &base, ADMIN, Method::PUT, &format!("/admin/integrations/{allio_id}/allio"), json!({
        "integration_uuid": ALLIO_UUID, "api_base_url": "http://127.0.0.1:9/", "api_key": "k", "active": true,
    }))
    .await?;
    let (_, ergonode_id, _) = tenant_with(&http, &base, ADMIN, "pim", "ergonode").await?;
    admin(
        &http,
        &base,
        ADMIN,
        Method::PUT,
        &format!("/admin/integrations/{ergonode_id}/ergonode"),
        json!({ "jwt_secret": ERGONODE_SECRET }),
    )
    .await?;
    let app_token = syncline::app_token::sign(
        &json!({ "exp": chrono::Utc::now().timestamp() + 3600, "synchronization_id": uuid::Uuid::new_v4().to_string() }),
        ERGONODE_SECRET.as_bytes(),
    );

    let healthz: Build = {
        let base = base.clone();
        Arc::new(move |http, _| http.get(format!("{base}/healthz")))
    };
    // Each request is newer than the last for its user (so it replaces the list: a write),
    // across both concurrency runs.
    let sync_dates = Arc::new(AtomicUsize::new(0));
    let imshop_sync: Build = {
        let base = base.clone();
        Arc::new(move |http, n| {
            let date = sync_dates.fetch_add(1, Ordering::Relaxed);
            let body = json!({
                "userIdentifier": format!("user-{}", n % USERS),
                "lastSyncDate": 1_700_000_000_000i64 + date as i64,
                "itemIds": (0..5).map(|i| format!("item-{}", (n + i) % 50)).collect::<Vec<_>>(),
            });
            http.post(format!("{base}/imshop/favorites"))
                .bearer_auth(&imshop)
                .json(&body)
        })
    };
    let allio_webhook: Build = {
        let url = format!("{base}/allio/webhook/{allio_token}");
        Arc::new(move |http, n| {
            let ids: Vec<usize> = (0..10).map(|i| n * 10 + i).collect();
            http.post(&url)
                .json(&json!({ "uuid": ALLIO_UUID, "command": "RESERVE_ADD", "indexes": ids }))
        })
    };
    let ergonode: Build = {
        let url = format!("{base}/ergonode/{ergonode_id}/consume/product_updated");
        Arc::new(move |http, n| {
            let body = json!({
                "name": "product_updated",
                "resource_id": { "id": format!("SKU-{}", n % 500), "type": "sku" },
                "synchronization": { "resource_customs": null, "events": [] },
            });
            http.put(&url).header("X-APP-TOKEN", &app_token).json(&body)
        })
    };

    let mut report = Report {
        unit: "requests",
        ..Report::default()
    };
    for (name, build) in [
        ("GET /healthz (baseline)", healthz),
        ("POST /imshop/favorites", imshop_sync),
        ("POST /allio/webhook/{token}", allio_webhook),
        ("PUT /ergonode/…/consume/product_updated", ergonode),
    ] {
        for concurrency in CONCURRENCY {
            let (row, failures) = hammer(&http, &build, concurrency).await;
            report.rows.push(Row {
                scenario: format!("{name}, {concurrency} clients"),
                ..row
            });
            if failures > 0 {
                report.notes.push(format!(
                    "{name} with {concurrency} clients: {failures} answers were not 2xx"
                ));
            }
        }
    }
    if report.notes.is_empty() {
        report.notes.push("every answer was 2xx".into());
    }
    let _ = stop.send(true);
    pool.close().await;
    Ok(report)
}

/// Sends `REQUESTS` requests from `concurrency` tasks; returns the row and the non-2xx count.
async fn hammer(http: &reqwest::Client, build: &Build, concurrency: usize) -> (Row, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, build, next, failures) =
                (http.clone(), build.clone(), next.clone(), failures.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= REQUESTS {
                        return latencies;
                    }
                    let sent = Instant::now();
                    let ok = build(&http, n)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(REQUESTS);
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    let row = Row::throughput(String::new(), REQUESTS, started.elapsed()).with_latencies(latencies);
    (row, failures.load(Ordering::Relaxed))
}
