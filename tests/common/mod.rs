//! Test harness: a fresh database per test (on `DATABASE_URL`'s server, or on one
//! embedded cluster per test binary), the real API on port 0, real workers, and helpers
//! to wait for job states without fixed sleeps.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod process;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::Value;
use sqlx::PgPool;
use syncline::{
    api::AppState,
    config::Config,
    db::{self, embedded::EmbeddedPostgres},
    hub::{self, Shutdown},
};
use syncline_jobs::{WorkerSet, WorkerSettings};
use tokio::{sync::OnceCell, task::JoinHandle};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

static EMBEDDED: OnceCell<EmbeddedPostgres> = OnceCell::const_new();
const CLUSTER_PREFIX: &str = "syncline-test-pg";

/// Test binaries' clusters outlive them on disk (their server stops with them); clear
/// those no server runs in any more.
fn remove_stale_clusters() {
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let stale = name.to_string_lossy().starts_with(CLUSTER_PREFIX)
            && !syncline::db::embedded::is_running(&entry.path());
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// URL of a maintenance database on the server tests run against.
async fn server_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    let pg = EMBEDDED
        .get_or_init(|| async {
            remove_stale_clusters();
            let dir = tempfile::Builder::new()
                .prefix(CLUSTER_PREFIX)
                .tempdir()
                .expect("temp dir")
                .keep();
            EmbeddedPostgres::start(&dir)
                .await
                .expect("embedded Postgres starts (or set DATABASE_URL)")
        })
        .await;
    pg.url.clone()
}

fn with_database(url: &str, name: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).expect("database URL parses");
    parsed.set_path(&format!("/{name}"));
    parsed.into()
}

/// A database of its own for one test, dropped when this value is.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
    name: String,
    server: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let db = Self::unmigrated().await;
        db::migrate::run(&db.pool).await.expect("migrations apply");
        db
    }

    /// An empty database, for tests that migrate it themselves (e.g. an upgrade).
    pub async fn unmigrated() -> Self {
        let server = server_url().await;
        let name = format!("syncline_test_{}", uuid::Uuid::new_v4().simple());
        let admin = db::connect_with_retry(&server, Duration::from_secs(30), 1)
            .await
            .expect("connect to test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = with_database(&server, &name);
        let pool = db::connect_with_retry(&url, Duration::from_secs(10), 10)
            .await
            .expect("connect to test database");
        Self {
            url,
            pool,
            name,
            server,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // The test's runtime is blocked while we drop, so its pool cannot be closed
        // gracefully: a runtime of our own drops the database, forcing its sessions out.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(admin) = db::connect_with_retry(&server, Duration::from_secs(5), 1).await
                {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Worker settings for tests: fast polls and heartbeats so waits stay short, and no
/// scheduler (its periodic jobs would race the test's own; enable it where tested).
pub fn test_worker_settings(name: &str) -> WorkerSettings {
    let mut s = WorkerSettings::new(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    s.poll_interval = Duration::from_millis(100);
    s.heartbeat = Duration::from_secs(1);
    s.http_timeout = Duration::from_secs(2);
    s.shutdown_grace = Duration::from_secs(5);
    s.scheduler = false;
    s
}

/// A running worker set, stopped (gracefully) by [`Workers::stop`].
pub struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Workers {
    pub fn start(pool: &PgPool, settings: WorkerSettings) -> Self {
        let (stop, shutdown) = Shutdown::manual();
        let set = syncline_jobs::register_all(WorkerSet::new(pool.clone(), settings));
        let handle = tokio::spawn(set.run(shutdown.wait()));
        Self { stop, handle }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.handle
            .await
            .expect("worker task joins")
            .expect("workers stop cleanly");
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub http: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
    pub workers: Option<Workers>,
}

/// The API on a free port with a fresh database, plus workers unless `with_workers` is false.
pub async fn spawn_app_with(with_workers: bool) -> TestApp {
    let db = TestDb::new().await;
    let config = Config::from_lookup(|name| match name {
        "SYNCLINE_MAX_BODY_BYTES" => Some("65536".into()),
        _ => None,
    })
    .expect("test config");
    let (acceptor, addr) = hub::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (stop, shutdown) = Shutdown::manual();
    let state = AppState::new(db.pool.clone(), ADMIN_TOKEN);
    tokio::spawn(async move { hub::serve(acceptor, state, &config, shutdown).await });
    let workers = with_workers.then(|| Workers::start(&db.pool, test_worker_settings("test")));
    TestApp {
        addr,
        db,
        http: reqwest::Client::new(),
        stop,
        workers,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(true).await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub async fn admin_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let resp = self.admin(method, path).json(&body).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn job(&self, id: &str) -> Value {
        let resp = self
            .admin(reqwest::Method::GET, &format!("/admin/jobs/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "job {id} is visible");
        resp.json().await.unwrap()
    }

    /// Polls the job until `done(job)` holds, or panics after `limit`.
    pub async fn wait_for_job(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} never reached the expected state: {job:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        if let Some(w) = self.workers {
            w.stop().await;
        }
        let _ = self.stop.send(true);
    }
}

/// The attempt history of a job as (outcome, error) pairs, once it has `count` entries.
pub fn outcomes(job: &Value) -> Vec<String> {
    job["attempt_history"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["outcome"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Creates a tenant through the admin API; returns its id.
pub async fn create_tenant(app: &TestApp, name: &str) -> String {
    let (status, body) = app
        .admin_json(
            reqwest::Method::POST,
            "/admin/tenants",
            serde_json::json!({ "name": name }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Creates an integration; returns its id and token.
pub async fn create_integration(app: &TestApp, tenant: &str, kind: &str) -> (String, String) {
    let (status, body) = app
        .admin_json(
            reqwest::Method::POST,
            &format!("/admin/tenants/{tenant}/integrations"),
            serde_json::json!({ "kind": kind, "name": format!("{kind} integration") }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (
        body["integration"]["id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

/// Issues a per-user token for an integration.
pub async fn user_token(app: &TestApp, integration: &str, user: &str) -> String {
    let (status, body) = app
        .admin_json(
            reqwest::Method::POST,
            &format!("/admin/integrations/{integration}/user-tokens"),
            serde_json::json!({ "user_id": user }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// A peer on 127.0.0.1 whose first answer is `first` and every later one a plain 200.
pub async fn peer_first_then_ok(first: wiremock::ResponseTemplate) -> wiremock::MockServer {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(first)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// A peer on 127.0.0.1 answering every request with `status`.
pub async fn peer(status: u16) -> wiremock::MockServer {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

/// Enqueues a `demo.ping` of `url` through the admin API; returns the job id.
pub async fn enqueue_ping(app: &TestApp, url: &str) -> String {
    let (status, body) = app
        .admin_json(
            reqwest::Method::POST,
            "/admin/jobs/ping",
            serde_json::json!({ "url": url }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["job_id"].as_str().unwrap().to_owned()
}
