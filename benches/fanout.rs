//! Webhook fan-out: N webhooks (20 per tenant, the per-tenant limit) each owed 100 changes,
//! delivered by one worker set to a local receiver answering `ok`. Reports the time until
//! every webhook has everything, deliveries/s and changes/s.
//!
//! Run with `cargo bench --bench fanout` (`DATABASE_URL` or an embedded cluster).

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use poem::{EndpointExt, Route, handler, post, web::Data};
use reqwest::Method;
use serde_json::{Value, json};
use support::{
    Report, Row, Server, run_in_fresh_database, show_engine_warnings, start_api, start_workers,
    tenant_with,
};

const ADMIN: &str = "bench-admin-token-0123456789";
const PER_TENANT: usize = 20;
const CHANGES: usize = 100;
/// Webhook counts to run, each in a fresh set of tenants.
const WEBHOOKS: [usize; 2] = [100, 1000];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    show_engine_warnings();
    let server = Server::start().await?;
    println!(
        "postgres: {}; one worker set (concurrency 32), receiver in-process",
        server.describe()
    );
    let outcome = run_in_fresh_database(&server, |url| async move { scenarios(&url).await }).await;
    server.stop();
    outcome?.print();
    Ok(())
}

#[derive(Default)]
struct Received {
    deliveries: AtomicUsize,
    changes: AtomicUsize,
}

#[handler]
fn receive(body: poem::web::Json<Value>, counts: Data<&Arc<Received>>) -> &'static str {
    counts.deliveries.fetch_add(1, Ordering::Relaxed);
    counts.changes.fetch_add(
        body["changes"].as_array().map_or(0, Vec::len),
        Ordering::Relaxed,
    );
    "ok"
}

async fn scenarios(url: &str) -> anyhow::Result<Report> {
    let pool = syncline::db::connect_with_retry(url, Duration::from_secs(30), 20).await?;
    syncline::db::migrate::run(&pool).await?;
    let (base, stop_api) = start_api(&pool, ADMIN).await?;
    let http = reqwest::Client::new();
    let counts = Arc::new(Received::default());
    let (acceptor, receiver) = syncline::hub::bind("127.0.0.1:0".parse()?).await?;
    let app = Route::new()
        .at("/hook/:n", post(receive))
        .data(counts.clone());
    let receiver_task = tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));

    let mut report = Report {
        unit: "changes",
        ..Report::default()
    };
    for (round, webhooks) in WEBHOOKS.into_iter().enumerate() {
        let mut tenants = Vec::new();
        for t in 0..webhooks / PER_TENANT {
            let (tenant, _, key) =
                tenant_with(&http, &base, ADMIN, &format!("fan-{round}-{t}"), "feed").await?;
            for w in 0..PER_TENANT {
                let resp = http
                    .request(Method::POST, format!("{base}/v1/shop.Webhook/CreateWebhook"))
                    .bearer_auth(&key)
                    .json(&json!({ "url": format!("http://{receiver}/hook/{t}-{w}"), "entities": ["product"] }))
                    .send()
                    .await?;
                anyhow::ensure!(
                    resp.status().is_success(),
                    "CreateWebhook: {}",
                    resp.status()
                );
            }
            tenants.push(tenant);
        }
        counts.deliveries.store(0, Ordering::Relaxed);
        counts.changes.store(0, Ordering::Relaxed);
        let (stop, handle) = start_workers(pool.clone(), "fanout");
        let started = Instant::now();
        for tenant in &tenants {
            sqlx::query(
                "INSERT INTO change_log (tenant_id, entity, entity_id, change_type, latest, changed)
                 SELECT $1::uuid, 'product', 'p' || n, 'update', jsonb_build_object('n', n), '{}'
                 FROM generate_series(1, $2) n",
            )
            .bind(tenant)
            .bind(CHANGES as i32)
            .execute(&pool)
            .await?;
        }
        let expected = webhooks * CHANGES;
        while counts.changes.load(Ordering::Relaxed) < expected {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(300),
                "fan-out did not finish"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed();
        let _ = stop.send(true);
        handle.await??;
        let deliveries = counts.deliveries.load(Ordering::Relaxed);
        report.rows.push(Row::throughput(
            format!("{webhooks} webhooks × {CHANGES} changes"),
            expected,
            elapsed,
        ));
        report.notes.push(format!(
            "{webhooks} webhooks: {deliveries} deliveries in {:.2} s ({:.0} deliveries/s)",
            elapsed.as_secs_f64(),
            deliveries as f64 / elapsed.as_secs_f64()
        ));
    }
    receiver_task.abort();
    let _ = stop_api.send(true);
    pool.close().await;
    Ok(report)
}
