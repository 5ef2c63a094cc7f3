//! Operator endpoints for jobs: enqueue the demo kinds, inspect any job.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};
use syncline_jobs::{
    core::{EnqueueOptions, Job, enqueue},
    noop::Noop,
    ping::Ping,
};

use super::{AppState, Tag, auth::AdminAuth, error::ApiError};
use crate::job_admin;

#[derive(Object)]
pub struct PingRequest {
    /// http(s) URL the worker will POST to.
    pub url: String,
}

#[derive(Object)]
pub struct Enqueued {
    pub job_id: String,
}

#[derive(Object)]
pub struct AttemptView {
    pub attempt: i32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// `done`, `retry_scheduled`, `failed` (budget spent) or `killed` (permanent error).
    pub outcome: String,
    pub error: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
}

#[derive(Object)]
pub struct JobView {
    pub id: String,
    pub queue: String,
    /// `pending`, `scheduled`, `running`, `retrying`, `failed`, `killed` or `done`.
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    /// When the job runs next (or last became due).
    pub run_at: DateTime<Utc>,
    pub locked_by: Option<String>,
    pub done_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub payload: serde_json::Value,
    pub attempt_history: Vec<AttemptView>,
}

impl From<job_admin::JobDetails> for JobView {
    fn from(d: job_admin::JobDetails) -> Self {
        Self {
            id: d.id,
            queue: d.queue,
            status: d.status,
            attempts: d.attempts,
            max_attempts: d.max_attempts,
            run_at: d.run_at,
            locked_by: d.locked_by,
            done_at: d.done_at,
            last_error: d.last_error,
            payload: d.payload,
            attempt_history: d
                .history
                .into_iter()
                .map(|a| AttemptView {
                    duration_ms: (a.finished_at - a.started_at).num_milliseconds(),
                    attempt: a.attempt,
                    worker: a.worker,
                    started_at: a.started_at,
                    finished_at: a.finished_at,
                    outcome: a.outcome,
                    error: a.error,
                    next_run_at: a.next_run_at,
                })
                .collect(),
        }
    }
}

async fn enqueue_now<J: Job>(state: &AppState, job: &J) -> Result<Json<Enqueued>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let id = enqueue(&mut tx, job, EnqueueOptions::default())
        .await?
        .ok_or_else(|| ApiError::bad_request("job was de-duplicated"))?;
    tx.commit().await?;
    Ok(Json(Enqueued { job_id: id }))
}

pub struct AdminJobsApi;

#[OpenApi(prefix_path = "/admin/jobs", tag = "Tag::Jobs")]
impl AdminJobsApi {
    /// Enqueue a `demo.noop` job (does nothing; measures the engine).
    #[oai(path = "/noop", method = "post")]
    async fn noop(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
    ) -> Result<Json<Enqueued>, ApiError> {
        enqueue_now(&state, &Noop::default()).await
    }

    /// Enqueue a `demo.ping` job: a worker POSTs to `url`, and the answer is classified
    /// like every partner call (retry, fail or done).
    #[oai(path = "/ping", method = "post")]
    async fn ping(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        body: Json<PingRequest>,
    ) -> Result<Json<Enqueued>, ApiError> {
        let url = reqwest::Url::parse(&body.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.username().is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("url must be an http(s) URL without credentials")
            })?;
        enqueue_now(&state, &Ping { url: url.into() }).await
    }

    /// One job with its payload and every attempt.
    #[oai(path = "/:id", method = "get")]
    async fn show(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        id: Path<String>,
    ) -> Result<Json<JobView>, ApiError> {
        job_admin::show(&state.pool, &id.0)
            .await?
            .map(|d| Json(d.into()))
            .ok_or_else(|| ApiError::not_found(format!("no job `{}`", id.0)))
    }
}
