//! What the benchmarks share: a Postgres server (`DATABASE_URL`'s or an embedded one), a
//! fresh database per run dropped afterwards, and the results table.
#![allow(dead_code)] // each benchmark uses part of it

use std::{future::Future, time::Duration};

use anyhow::Context;
use sqlx::PgPool;
use syncline::db::{self, embedded::EmbeddedPostgres};
use uuid::Uuid;

pub fn show_engine_warnings() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The Postgres server we benchmark against: `DATABASE_URL`'s, or an embedded one.
pub struct Server {
    pub url: String,
    embedded: Option<(EmbeddedPostgres, tempfile::TempDir)>,
}

impl Server {
    pub async fn start() -> anyhow::Result<Self> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Ok(Self {
                url,
                embedded: None,
            });
        }
        let folder = tempfile::Builder::new()
            .prefix("syncline-bench-pg")
            .tempdir()?;
        let pg = EmbeddedPostgres::start(folder.path()).await?;
        Ok(Self {
            url: pg.url.clone(),
            embedded: Some((pg, folder)),
        })
    }

    pub fn describe(&self) -> &'static str {
        match self.embedded {
            Some(_) => "embedded cluster (no DATABASE_URL)",
            None => "DATABASE_URL",
        }
    }

    pub fn stop(self) {
        if let Some((pg, _folder)) = self.embedded {
            pg.stop();
        }
    }
}

/// Creates a database of our own on `server`, runs every scenario in it, and drops it
/// whether or not they succeeded.
pub async fn run_in_fresh_database<F, Fut>(server: &Server, scenarios: F) -> anyhow::Result<Report>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<Report>>,
{
    let name = format!("bench_{}", Uuid::new_v4().simple());
    let admin = db::connect_with_retry(&server.url, Duration::from_secs(30), 1).await?;
    execute(&admin, format!("CREATE DATABASE {name}")).await?;
    let report = scenarios(database_url(&server.url, &name)?).await;
    let dropped = execute(&admin, format!("DROP DATABASE {name} WITH (FORCE)")).await;
    admin.close().await;
    let report = report?;
    dropped.context("dropping the benchmark database")?;
    Ok(report)
}

pub async fn execute(pool: &PgPool, sql: String) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    Ok(())
}

fn database_url(server_url: &str, name: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(server_url).context("database URL does not parse")?;
    url.set_path(&format!("/{name}"));
    Ok(url.into())
}

/// A results table; `unit` names what was counted (jobs, requests, ...).
#[derive(Default)]
pub struct Report {
    pub unit: &'static str,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

pub struct Row {
    pub scenario: String,
    pub jobs: usize,
    pub seconds: f64,
    pub jobs_per_second: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Row {
    pub fn throughput(scenario: String, jobs: usize, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            scenario,
            jobs,
            seconds,
            jobs_per_second: Some(jobs as f64 / seconds),
            p50_ms: None,
            p99_ms: None,
        }
    }

    pub fn latency(scenario: String, jobs: usize, elapsed: Duration, latencies: Vec<f64>) -> Self {
        Self {
            jobs_per_second: None,
            ..Self::throughput(scenario, jobs, elapsed).with_latencies(latencies)
        }
    }

    pub fn with_latencies(self, mut latencies: Vec<f64>) -> Self {
        latencies.sort_by(f64::total_cmp);
        Self {
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            ..self
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

impl Report {
    pub fn print(&self) {
        let width = self
            .rows
            .iter()
            .map(|r| r.scenario.chars().count())
            .max()
            .unwrap_or(0);
        let dash = |value: Option<f64>, precision: usize| {
            value.map_or_else(|| "-".to_owned(), |v| format!("{v:.precision$}"))
        };
        println!(
            "{:<width$} | {:>6} | {:>7} | {:>8} | {:>8} | {:>8}",
            "scenario",
            self.unit,
            "seconds",
            format!("{}/s", self.unit),
            "p50 ms",
            "p99 ms"
        );
        println!("{}", "-".repeat(width + 52));
        for row in &self.rows {
            println!(
                "{:<width$} | {:>6} | {:>7.2} | {:>8} | {:>8} | {:>8}",
                row.scenario,
                row.jobs,
                row.seconds,
                dash(row.jobs_per_second, 0),
                dash(row.p50_ms, 2),
                dash(row.p99_ms, 2),
            );
        }
        for note in &self.notes {
            println!("{note}");
        }
    }
}

/// The API of this build on a free loopback port, over `pool`, until `shutdown` fires.
pub async fn start_api(
    pool: &PgPool,
    admin_token: &str,
) -> anyhow::Result<(String, tokio::sync::watch::Sender<bool>)> {
    let config = syncline::config::Config::from_lookup(|_| None)?;
    let (acceptor, addr) = syncline::hub::bind("127.0.0.1:0".parse()?).await?;
    let (stop, shutdown) = syncline::hub::Shutdown::manual();
    let state = syncline::api::AppState::new(pool.clone(), admin_token);
    tokio::spawn(async move { syncline::hub::serve(acceptor, state, &config, shutdown).await });
    Ok((format!("http://{addr}"), stop))
}

/// An admin API call that must succeed; its JSON answer (null for 204).
pub async fn admin(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let resp = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let answer = resp.json().await.unwrap_or(serde_json::Value::Null);
    anyhow::ensure!(status.is_success(), "{path}: {status} {answer}");
    Ok(answer)
}

/// Creates a tenant and one integration of `kind`; returns (tenant id, integration id, token).
pub async fn tenant_with(
    http: &reqwest::Client,
    base: &str,
    admin_token: &str,
    tenant: &str,
    kind: &str,
) -> anyhow::Result<(String, String, String)> {
    let t = admin(
        http,
        base,
        admin_token,
        reqwest::Method::POST,
        "/admin/tenants",
        serde_json::json!({ "name": tenant }),
    )
    .await?;
    let tenant_id = t["id"].as_str().context("tenant id")?.to_owned();
    let i = admin(
        http,
        base,
        admin_token,
        reqwest::Method::POST,
        &format!("/admin/tenants/{tenant_id}/integrations"),
        serde_json::json!({ "kind": kind, "name": kind }),
    )
    .await?;
    Ok((
        tenant_id,
        i["integration"]["id"]
            .as_str()
            .context("integration id")?
            .to_owned(),
        i["token"].as_str().context("token")?.to_owned(),
    ))
}

/// A worker set like one `work` process (no scheduler), stopped by the returned sender.
pub fn start_workers(
    pool: PgPool,
    name: &str,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut settings =
        syncline_jobs::WorkerSettings::new(format!("{name}-{}", Uuid::new_v4().simple()));
    settings.scheduler = false;
    let (stop, shutdown) = syncline::hub::Shutdown::manual();
    let set = syncline_jobs::register_all(syncline_jobs::WorkerSet::new(pool, settings));
    (stop, tokio::spawn(set.run(shutdown.wait())))
}

/// Polls `count_sql` (a `SELECT count(*)`) until it reaches `target`, for at most `limit`.
pub async fn wait_for_count(
    pool: &PgPool,
    count_sql: &'static str,
    target: i64,
    limit: Duration,
) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(count_sql).fetch_one(pool).await?;
        if n >= target {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "gave up after {limit:?} at {n} of {target}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
