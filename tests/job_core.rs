//! The job core against hostile answers, panics, deploys, crash loops and cancels, with
//! real peers on 127.0.0.1 and real worker processes where a process boundary matters.

mod common;

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use common::{
    TestDb, enqueue_ping,
    process::{WorkProcess, wait_until},
    spawn_app, spawn_app_with, test_worker_settings,
};
use nix::sys::signal::Signal;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use syncline::hub::Shutdown;
use syncline_jobs::{
    WorkerSet,
    core::{
        EnqueueOptions, Job, JobContext, JobError, JobState, RetryPolicy, enqueue,
        store::operator::{self, JobDetails},
    },
    noop::Noop,
    ping::Ping,
};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};

const WAIT: Duration = Duration::from_secs(30);

async fn details(db: &TestDb, id: &str) -> JobDetails {
    operator::show(&db.pool, id)
        .await
        .unwrap()
        .expect("job exists")
}

async fn state_of(db: &TestDb, id: &str) -> JobState {
    details(db, id).await.job.state
}

fn outcomes(d: &JobDetails) -> Vec<String> {
    d.history.iter().map(|a| a.outcome.clone()).collect()
}

async fn enqueue_now<J: Job>(db: &TestDb, job: &J, options: EnqueueOptions) -> Option<String> {
    let mut tx = db.pool.begin().await.unwrap();
    let id = enqueue(&mut tx, job, options).await.unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn nul_bytes_and_an_endless_retry_after_make_one_clamped_retry() {
    let app = spawn_app().await;
    let peer = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("retry-after", "18446744073709551615")
                .set_body_bytes(b"bad\0gate\0way".to_vec()),
        )
        .mount(&peer)
        .await;
    let ping = enqueue_ping(&app, &peer.uri()).await;
    let mut noops = Vec::new();
    for _ in 0..20 {
        noops.push(
            enqueue_now(&app.db, &Noop::default(), EnqueueOptions::default())
                .await
                .unwrap(),
        );
    }

    wait_until(WAIT, || async {
        state_of(&app.db, &ping).await == JobState::Retryable
    })
    .await;
    for id in &noops {
        wait_until(WAIT, || async {
            state_of(&app.db, id).await == JobState::Completed
        })
        .await;
    }
    // One attempt, and the next one a day away: no loop can follow.
    let job = details(&app.db, &ping).await;
    assert_eq!(job.job.state, JobState::Retryable);
    assert_eq!(job.job.attempt, 1);
    assert_eq!(outcomes(&job), ["retry_scheduled"]);
    let error = job.job.last_error.unwrap();
    assert!(error.contains("503") && !error.contains('\0'), "{error:?}");
    let wait = job.job.run_at - job.history[0].finished_at;
    assert!(
        (86_340..=86_400).contains(&wait.num_seconds()),
        "Retry-After is cut to a day, got {wait}"
    );
    assert_eq!(peer.received_requests().await.unwrap().len(), 1);
    app.stop().await;
}

/// A job kind that panics when told to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Boom {
    panic: bool,
}

const AT_ONCE: &[Duration] = &[Duration::ZERO];

impl Job for Boom {
    const QUEUE: &'static str = "test.boom";
    const POLICY: RetryPolicy = RetryPolicy {
        delays: AT_ONCE,
        max_attempts: 2,
    };

    async fn run(self, _: JobContext) -> Result<(), JobError> {
        assert!(!self.panic, "boom from a job");
        Ok(())
    }
}

#[tokio::test]
async fn a_panic_fails_that_attempt_alone() {
    let db = TestDb::new().await;
    let (stop, shutdown) = Shutdown::manual();
    let set = WorkerSet::new(db.pool.clone(), test_worker_settings("boom")).add::<Boom>();
    let workers = tokio::spawn(set.run(shutdown.wait()));

    let bad = enqueue_now(&db, &Boom { panic: true }, EnqueueOptions::default())
        .await
        .unwrap();
    let mut good = Vec::new();
    for _ in 0..20 {
        good.push(
            enqueue_now(&db, &Boom { panic: false }, EnqueueOptions::default())
                .await
                .unwrap(),
        );
    }
    wait_until(WAIT, || async {
        state_of(&db, &bad).await == JobState::Discarded
    })
    .await;
    for id in &good {
        wait_until(WAIT, || async {
            state_of(&db, id).await == JobState::Completed
        })
        .await;
    }
    let job = details(&db, &bad).await;
    assert_eq!(outcomes(&job), ["retry_scheduled", "discarded"]);
    assert!(
        job.job
            .last_error
            .as_deref()
            .unwrap()
            .contains("panicked: boom from a job"),
        "{:?}",
        job.job.last_error
    );
    let _ = stop.send(true);
    workers.await.unwrap().unwrap();
}

/// A peer that answers 200 after `delay`, counting requests.
async fn slow_peer(delay: Duration) -> MockServer {
    let peer = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_delay(delay))
        .mount(&peer)
        .await;
    peer
}

async fn running_under(db: &TestDb, id: &str, pid: u32) -> bool {
    let job = details(db, id).await.job;
    job.state == JobState::Running
        && job
            .locked_by
            .is_some_and(|w| w.contains(&format!("-{pid}-")))
}

/// Short heartbeats: a silent worker is dead after 1 s.
const FAST_ORPHANS: [(&str, &str); 3] = [
    ("SYNCLINE_WORKER_HEARTBEAT_MS", "250"),
    ("SYNCLINE_WORKER_MISSED_HEARTBEATS", "4"),
    ("SYNCLINE_SHUTDOWN_GRACE_SECS", "15"),
];

#[tokio::test]
async fn sigterm_never_causes_a_second_run_of_a_job_that_finishes_in_the_grace_period() {
    let db = TestDb::new().await;
    // The answer takes four orphan windows: a draining worker that stopped
    // heart-beating would lose the job to the other process.
    let peer = slow_peer(Duration::from_secs(4)).await;
    let mut first = WorkProcess::start_with(&db, &FAST_ORPHANS);
    let ping = Ping { url: peer.uri() };
    let id = enqueue_now(&db, &ping, EnqueueOptions::default())
        .await
        .unwrap();
    wait_until(WAIT, || running_under(&db, &id, first.pid())).await;
    first.signal(Signal::SIGTERM);
    let _second = WorkProcess::start_with(&db, &FAST_ORPHANS);

    wait_until(WAIT, || async {
        state_of(&db, &id).await == JobState::Completed
    })
    .await;
    assert!(first.wait_exit(WAIT).success(), "{}", first.output());
    // A takeover would have started a second run (a request, an attempt) before the
    // first one's answer came back; the job has ended, so none can start later.
    let job = details(&db, &id).await;
    assert_eq!(outcomes(&job), ["completed"]);
    assert_eq!(job.job.state, JobState::Completed);
    assert_eq!(peer.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_job_that_keeps_killing_its_worker_is_discarded_after_three_recoveries() {
    let db = TestDb::new().await;
    let peer = slow_peer(Duration::from_secs(120)).await;
    let id = enqueue_now(&db, &Ping { url: peer.uri() }, EnqueueOptions::default())
        .await
        .unwrap();
    for run in 1..=3 {
        let worker = WorkProcess::start_with(&db, &FAST_ORPHANS);
        wait_until(WAIT, || running_under(&db, &id, worker.pid())).await;
        wait_until(WAIT, || async {
            peer.received_requests().await.unwrap().len() == run
        })
        .await;
        worker.signal(Signal::SIGKILL);
    }
    let _survivor = WorkProcess::start_with(&db, &FAST_ORPHANS);
    wait_until(WAIT, || async {
        state_of(&db, &id).await == JobState::Discarded
    })
    .await;
    let job = details(&db, &id).await;
    assert_eq!(job.job.recoveries, 3);
    assert_eq!(outcomes(&job), ["crashed", "crashed", "crashed"]);
    assert!(job.job.last_error.as_deref().unwrap().contains("3 times"));
    assert_eq!(peer.received_requests().await.unwrap().len(), 3);
}

async fn cancel(app: &common::TestApp, ids: &[&str]) -> serde_json::Value {
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/admin/jobs/cancel",
            json!({ "filter": { "ids": ids }, "reason": "test" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn cancelling_frees_the_dedupe_key_and_is_not_a_failure() {
    let app = spawn_app_with(false).await;
    let keyed = || EnqueueOptions {
        dedupe_key: Some("one-at-a-time".into()),
        ..Default::default()
    };
    let first = enqueue_now(&app.db, &Noop::default(), keyed())
        .await
        .unwrap();
    assert_eq!(enqueue_now(&app.db, &Noop::default(), keyed()).await, None);

    assert_eq!(cancel(&app, &[&first]).await["count"], 1);
    let job = details(&app.db, &first).await.job;
    assert_eq!(job.state, JobState::Cancelled);
    assert!(
        job.last_error
            .unwrap()
            .contains("cancelled by an operator: test")
    );

    let second = enqueue_now(&app.db, &Noop::default(), keyed()).await;
    assert!(
        second.is_some_and(|id| id != first),
        "the key is free again"
    );
    // Cancelled again: nothing left to cancel.
    assert_eq!(cancel(&app, &[&first]).await["count"], 0);
    app.stop().await;
}

#[tokio::test]
async fn a_running_job_at_its_last_attempt_can_be_cancelled_and_stays_cancelled() {
    let app = spawn_app().await;
    // Answers within the tests' 2 s HTTP timeout.
    let peer = slow_peer(Duration::from_secs(1)).await;
    let id = enqueue_ping(&app, &peer.uri()).await;
    sqlx::query("UPDATE jobs SET max_attempts = 1 WHERE id = $1")
        .bind(&id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    wait_until(WAIT, || async {
        state_of(&app.db, &id).await == JobState::Running
    })
    .await;
    assert_eq!(cancel(&app, &[&id]).await["count"], 1);
    // The attempt ends; its result is recorded but does not undo the cancel.
    wait_until(WAIT, || async {
        !details(&app.db, &id).await.history.is_empty()
    })
    .await;
    let job = details(&app.db, &id).await;
    assert_eq!(job.job.state, JobState::Cancelled);
    assert_eq!(outcomes(&job), ["completed"]);
    app.stop().await;
}

/// Work for a tenant that takes a little while.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TenantWork {
    tenant: String,
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

impl Job for TenantWork {
    const QUEUE: &'static str = "test.tenant_work";
    const FAIR: bool = true;

    fn fair_key(&self) -> Option<String> {
        Some(self.tenant.clone())
    }

    async fn run(self, _: JobContext) -> Result<(), JobError> {
        STARTED.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

#[tokio::test]
async fn one_tenants_backlog_does_not_starve_another() {
    let db = TestDb::new().await;
    let busy = TenantWork {
        tenant: "busy".into(),
    };
    let mut tx = db.pool.begin().await.unwrap();
    for _ in 0..10_000 {
        enqueue(&mut tx, &busy, EnqueueOptions::default())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let quiet = TenantWork {
        tenant: "quiet".into(),
    };
    let mut later = Vec::new();
    for _ in 0..5 {
        later.push(
            enqueue_now(&db, &quiet, EnqueueOptions::default())
                .await
                .unwrap(),
        );
    }

    let mut settings = test_worker_settings("fair");
    settings.concurrency = 4;
    settings.batch_size = 4;
    let (stop, shutdown) = Shutdown::manual();
    let set = WorkerSet::new(db.pool.clone(), settings).add::<TenantWork>();
    let workers = tokio::spawn(set.run(shutdown.wait()));
    for id in &later {
        wait_until(WAIT, || async {
            state_of(&db, id).await == JobState::Completed
        })
        .await;
    }
    let busy_waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE fair_key = 'busy' AND state = 'available'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        busy_waiting >= 9_900,
        "the quiet tenant's 5 jobs ran after only {} of the busy one's",
        10_000 - busy_waiting
    );
    let _ = stop.send(true);
    workers.await.unwrap().unwrap();
}
