//! `syncline work` as real processes: a killed worker's jobs are taken over by a
//! survivor; SIGTERM drains in-flight jobs and takes nothing new; a worker serves its own
//! metrics on `SYNCLINE_METRICS_ADDR`; job log lines name the tenant they work for.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    TestDb,
    process::{WorkProcess, wait_until},
};
use nix::sys::signal::Signal;
use serde_json::Value;
use syncline::{
    job_ops,
    tenancy::{self, IntegrationKind, Name},
};
use syncline_jobs::{
    allio_fetch::Fetch,
    core::{EnqueueOptions, Job, enqueue},
    noop::Noop,
    ping::Ping,
};
use wiremock::{MockServer, ResponseTemplate};

async fn enqueue_now<J: Job>(db: &TestDb, job: &J) -> String {
    let mut tx = db.pool.begin().await.unwrap();
    let id = enqueue(&mut tx, job, EnqueueOptions::default())
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    id
}

/// A peer whose first answer takes `first_delay`; later answers are immediate 200s.
async fn slow_first_peer(first_delay: Duration) -> MockServer {
    common::peer_first_then_ok(ResponseTemplate::new(200).set_delay(first_delay)).await
}

async fn status_of(db: &TestDb, id: &str) -> String {
    job_ops::show(&db.pool, id)
        .await
        .unwrap()
        .expect("job exists")
        .job
        .state
        .to_string()
}

#[tokio::test]
async fn a_surviving_worker_takes_over_the_jobs_of_a_killed_one() {
    let db = TestDb::new().await;
    let peer = slow_first_peer(Duration::from_secs(60)).await;
    let mut first = WorkProcess::start(&db);
    let id = enqueue_now(&db, &Ping { url: peer.uri() }).await;
    wait_until(Duration::from_secs(20), || async {
        peer.received_requests().await.unwrap().len() == 1
    })
    .await;
    let dead_worker = job_ops::show(&db.pool, &id)
        .await
        .unwrap()
        .unwrap()
        .job
        .locked_by;

    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5));
    let killed_at = Instant::now();
    let _second = WorkProcess::start(&db);
    wait_until(Duration::from_secs(30), || async {
        status_of(&db, &id).await == "completed"
    })
    .await;
    let recovery = killed_at.elapsed();

    let job = job_ops::show(&db.pool, &id).await.unwrap().unwrap();
    assert_ne!(job.job.locked_by, dead_worker, "finished by another worker");
    assert_eq!(peer.received_requests().await.unwrap().len(), 2);
    assert!(
        recovery < Duration::from_secs(30),
        "took over in {recovery:?}"
    );
    eprintln!("takeover after kill -9: {recovery:?}");
}

#[tokio::test]
async fn sigterm_finishes_in_flight_jobs_and_takes_no_new_ones() {
    let db = TestDb::new().await;
    let peer = slow_first_peer(Duration::from_secs(2)).await;
    let mut worker = WorkProcess::start(&db);
    let in_flight = enqueue_now(&db, &Ping { url: peer.uri() }).await;
    wait_until(Duration::from_secs(20), || async {
        peer.received_requests().await.unwrap().len() == 1
    })
    .await;

    worker.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = enqueue_now(&db, &Noop::default()).await;
    let exit = worker.wait_exit(Duration::from_secs(15));

    assert!(exit.success(), "clean exit after draining: {exit:?}");
    assert_eq!(status_of(&db, &in_flight).await, "completed");
    assert_eq!(
        status_of(&db, &late).await,
        "available",
        "nothing new taken after SIGTERM"
    );
}

#[tokio::test]
async fn a_worker_serves_its_own_metrics_on_the_metrics_address() {
    let db = TestDb::new().await;
    let peer = common::peer(400).await;
    let worker = WorkProcess::start_with(&db, &[("SYNCLINE_METRICS_ADDR", "127.0.0.1:0")]);
    let url = worker.wait_for_line(Duration::from_secs(20), |line| {
        line.split_once("metrics: ")
            .map(|(_, url)| url.trim().to_owned())
    });
    let noop = enqueue_now(&db, &Noop::default()).await;
    let ping = enqueue_now(&db, &Ping { url: peer.uri() }).await;
    wait_until(Duration::from_secs(20), || async {
        status_of(&db, &noop).await == "completed" && status_of(&db, &ping).await == "discarded"
    })
    .await;

    let http = reqwest::Client::new();
    let scraped = http.get(&url).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    let metrics = scraped.text().await.unwrap();
    let value = |series: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
    };
    // This process's own counters, which no API process has.
    assert_eq!(
        value(r#"syncline_job_attempts_total{queue="demo.noop",outcome="completed"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(r#"syncline_outbound_calls_total{queue="demo.ping",outcome="permanent"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(r#"syncline_jobs{queue="demo.ping",status="discarded"}"#),
        Some(1.0)
    );

    let other = http
        .get(url.replace("/metrics", "/admin/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "nothing but /metrics is served there");
    let body: Value = other.json().await.unwrap();
    assert!(body["code"].is_string(), "{body}");
}

#[test]
fn a_bad_metrics_address_stops_the_worker_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .arg("work")
        .env("SYNCLINE_METRICS_ADDR", "9100")
        .stdin(Stdio::null())
        .output()
        .expect("syncline binary starts");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SYNCLINE_METRICS_ADDR"), "{stderr}");
}

#[tokio::test]
async fn job_log_lines_name_the_tenant_and_integration() {
    let db = TestDb::new().await;
    let tenant = tenancy::create_tenant(&db.pool, &Name::parse("acme", "name").unwrap())
        .await
        .unwrap();
    let name = Name::parse("acme allio", "name").unwrap();
    let (integration, _) =
        tenancy::create_integration(&db.pool, tenant.id, IntegrationKind::Allio, &name)
            .await
            .unwrap();
    // Job spans are at `info`: a filter above it would leave the lines without them.
    let worker = WorkProcess::start_with(
        &db,
        &[("SYNCLINE_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
    );
    // No ALLIO settings: the job fails permanently, and says so in a warning.
    let id = enqueue_now(
        &db,
        &Fetch {
            integration_id: integration.id,
        },
    )
    .await;

    let span = worker.wait_for_line(Duration::from_secs(20), |line| {
        let entry: Value = serde_json::from_str(line).ok()?;
        (entry["span"]["job_id"] == id.as_str()).then(|| entry["span"].clone())
    });
    assert_eq!(span["queue"], "allio.fetch");
    assert_eq!(span["tenant"], tenant.id.to_string(), "{span}");
    assert_eq!(span["integration"], integration.id.to_string());
}
