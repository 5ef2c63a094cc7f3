//! ALLIO pacing under a backlog: 4 worker sets (each with its own connection pool, like
//! 4 `work` processes) drain a backlog of ALLIO tasks against the ALLIO simulator, which
//! allows 2 requests per second per client IP. Reports the request rate achieved against
//! the limit, the 1-second windows above it, and ids synced per second.
//!
//! Run with `cargo bench --bench allio_pacing` (`DATABASE_URL` or an embedded cluster).

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use support::{
    Report, Row, Server, admin, run_in_fresh_database, show_engine_warnings, start_api,
    start_workers, tenant_with, wait_for_count,
};
use syncline::simulators::allio::AllioSimulator;

const ADMIN: &str = "bench-admin-token-0123456789";
const API_KEY: &str = "bench-allio-key";
const UUID: &str = "3f1c2a7e-9b1d-4c3e-8f5a-2b6d7e8f9a0b";
/// Webhooks of 100 ids each: one request per webhook at 2 requests/s.
const RESERVE_WEBHOOKS: usize = 40;
const DEALCARD_WEBHOOKS: usize = 20;
const WORKERS: usize = 4;
const LIMIT_PER_SEC: f64 = 2.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    show_engine_warnings();
    let server = Server::start().await?;
    println!(
        "postgres: {}; {WORKERS} worker sets with a pool each",
        server.describe()
    );
    let outcome = run_in_fresh_database(&server, |url| async move { scenario(&url).await }).await;
    server.stop();
    outcome?.print();
    Ok(())
}

async fn scenario(url: &str) -> anyhow::Result<Report> {
    let pool = syncline::db::connect_with_retry(url, Duration::from_secs(30), 10).await?;
    syncline::db::migrate::run(&pool).await?;
    let (base, stop_api) = start_api(&pool, ADMIN).await?;
    let http = reqwest::Client::new();
    let (sim, sim_base) = AllioSimulator::start(API_KEY).await?;
    let (_, integration, token) = tenant_with(&http, &base, ADMIN, "crm", "allio").await?;
    admin(
        &http,
        &base,
        ADMIN,
        Method::PUT,
        &format!("/admin/integrations/{integration}/allio"),
        json!({
            "integration_uuid": UUID, "api_base_url": sim_base, "api_key": API_KEY, "active": true,
        }),
    )
    .await?;
    for (command, count, offset) in [
        ("RESERVE_ADD", RESERVE_WEBHOOKS, 0),
        ("DEALCARD_ADD", DEALCARD_WEBHOOKS, 1_000_000),
    ] {
        for w in 0..count {
            let ids: Vec<usize> = (0..100).map(|i| offset + w * 100 + i).collect();
            let resp = http
                .post(format!("{base}/allio/webhook/{token}"))
                .json(&json!({ "uuid": UUID, "command": command, "indexes": ids }))
                .send()
                .await?;
            anyhow::ensure!(
                resp.status().is_success(),
                "webhook refused: {}",
                resp.status()
            );
        }
    }

    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for n in 0..WORKERS {
        let own = syncline::db::connect_with_retry(url, Duration::from_secs(30), 10).await?;
        workers.push(start_workers(own, &format!("pacing-{n}")));
    }
    let tasks = (RESERVE_WEBHOOKS + DEALCARD_WEBHOOKS) as i64;
    let limit = Duration::from_secs_f64(tasks as f64 / LIMIT_PER_SEC * 2.0 + 60.0);
    wait_for_count(
        &pool,
        "SELECT count(*) FROM allio_tasks WHERE status = 2",
        tasks,
        limit,
    )
    .await?;
    let elapsed = started.elapsed();
    for (stop, handle) in workers {
        let _ = stop.send(true);
        handle.await??;
    }
    let _ = stop_api.send(true);

    let arrivals = sim.arrivals();
    let accepted: Vec<_> = arrivals.iter().filter(|a| a.status != 429).collect();
    let throttled = arrivals.len() - accepted.len();
    let span = accepted
        .last()
        .zip(accepted.first())
        .map_or(0.0, |(l, f)| l.at.duration_since(f.at).as_secs_f64());
    let rate = if span > 0.0 {
        (accepted.len() - 1) as f64 / span
    } else {
        0.0
    };
    let mut busiest = 0;
    let mut over = 0;
    for (i, a) in accepted.iter().enumerate() {
        let in_window = accepted[i..]
            .iter()
            .take_while(|b| b.at.duration_since(a.at) < Duration::from_secs(1))
            .count();
        busiest = busiest.max(in_window);
        over += usize::from(in_window as f64 > LIMIT_PER_SEC);
    }
    let ids: usize = accepted.iter().map(|a| a.ids).sum();
    let mut report = Report {
        unit: "ids",
        ..Report::default()
    };
    report.rows.push(Row::throughput(
        format!("ALLIO ids synced by {WORKERS} worker sets"),
        ids,
        elapsed,
    ));
    report.notes.push(format!(
        "requests {} (429s: {throttled}); achieved {rate:.3} requests/s between first and last (limit {LIMIT_PER_SEC}); \
         busiest 1-second window: {busiest} requests; windows above the limit: {over}",
        accepted.len()
    ));
    pool.close().await;
    Ok(report)
}
