//! `syncline work` as real processes: a killed worker's jobs are taken over by a
//! survivor; SIGTERM drains in-flight jobs and takes nothing new.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::TestDb;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use syncline::job_admin;
use syncline_jobs::{
    core::{EnqueueOptions, Job, enqueue},
    noop::Noop,
    ping::Ping,
};
use wiremock::{MockServer, ResponseTemplate};

/// A `syncline work` process, killed if the test ends before it does.
struct WorkProcess(Child);

impl WorkProcess {
    fn start(db: &TestDb) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_syncline"))
            .arg("work")
            .env("DATABASE_URL", &db.url)
            .env("SYNCLINE_WORKER_HEARTBEAT_SECS", "1")
            .env("SYNCLINE_WORKER_POLL_MS", "100")
            .env("SYNCLINE_SHUTDOWN_GRACE_SECS", "10")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("syncline binary starts");
        Self(child)
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.0.id() as i32), signal).expect("signal delivered");
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "worker process did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WorkProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn enqueue_now<J: Job>(db: &TestDb, job: &J) -> String {
    let mut tx = db.pool.begin().await.unwrap();
    let id = enqueue(&mut tx, job, EnqueueOptions::default())
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "condition not reached in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A peer whose first answer takes `first_delay`; later answers are immediate 200s.
async fn slow_first_peer(first_delay: Duration) -> MockServer {
    common::peer_first_then_ok(ResponseTemplate::new(200).set_delay(first_delay)).await
}

async fn status_of(db: &TestDb, id: &str) -> String {
    job_admin::show(&db.pool, id)
        .await
        .unwrap()
        .expect("job exists")
        .status
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
    let dead_worker = job_admin::show(&db.pool, &id)
        .await
        .unwrap()
        .unwrap()
        .locked_by;

    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5));
    let killed_at = Instant::now();
    let _second = WorkProcess::start(&db);
    wait_until(Duration::from_secs(30), || async {
        status_of(&db, &id).await == "done"
    })
    .await;
    let recovery = killed_at.elapsed();

    let job = job_admin::show(&db.pool, &id).await.unwrap().unwrap();
    assert_ne!(job.locked_by, dead_worker, "finished by another worker");
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
    assert_eq!(status_of(&db, &in_flight).await, "done");
    assert_eq!(
        status_of(&db, &late).await,
        "pending",
        "nothing new taken after SIGTERM"
    );
}
