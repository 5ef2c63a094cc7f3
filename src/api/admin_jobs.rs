//! Operator endpoints for jobs: enqueue the demo kinds, inspect any job.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use syncline_jobs::{
    core::{EnqueueOptions, Job, enqueue},
    noop::Noop,
    ping::Ping,
};
use uuid::Uuid;

use super::{AppState, Tag, auth::AdminAuth, error::ApiError};
use crate::job_ops::{self, JobFilter};
use syncline_jobs::core::store::operator::Filter;

#[derive(Object)]
pub struct BulkRequest {
    pub filter: JobFilter,
    /// Why (kept with every job touched). Required unless `dry_run`.
    #[oai(default)]
    pub reason: String,
    /// Only count what would be touched.
    #[oai(default)]
    pub dry_run: bool,
}

#[derive(Object)]
pub struct BulkResult {
    /// Jobs touched (or that would be, on a dry run).
    pub count: i64,
    pub job_ids: Vec<String>,
    pub dry_run: bool,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobPage {
    pub jobs: Vec<job_ops::JobSummary>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<String>,
}

#[derive(Object)]
pub struct StatusCount {
    pub status: String,
    pub count: i64,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct QueueStatsView {
    pub queue: String,
    pub counts: Vec<StatusCount>,
    pub oldest_pending_seconds: Option<f64>,
    pub attempts_last_hour: i64,
    /// Share of the last hour's attempts that did not succeed (0 to 1).
    pub failure_rate_last_hour: f64,
}

fn checked(filter: JobFilter) -> Result<Filter, ApiError> {
    Filter::try_from(filter).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn bulk(
    state: &AppState,
    body: BulkRequest,
    act: job_ops::Action,
) -> Result<Json<BulkResult>, ApiError> {
    let dry_run = body.dry_run;
    let reason = body.reason.trim().to_owned();
    let filter = checked(body.filter)?;
    if dry_run {
        let count = job_ops::count(&state.pool, &filter, act).await?;
        return Ok(Json(BulkResult {
            count,
            job_ids: Vec::new(),
            dry_run,
        }));
    }
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiError::bad_request(
            "a reason of 1 to 500 characters is required",
        ));
    }
    let job_ids = job_ops::apply(&state.pool, &filter, act, &reason).await?;
    Ok(Json(BulkResult {
        count: job_ids.len() as i64,
        job_ids,
        dry_run,
    }))
}

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
#[oai(skip_serializing_if_is_none)]
pub struct AttemptView {
    pub attempt: i32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// `completed`, `retry_scheduled`, `snoozed` (run again later, attempt given
    /// back), `discarded` (permanent error or budget spent), `crashed` (its worker died).
    pub outcome: String,
    pub error: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobView {
    pub id: String,
    pub queue: String,
    /// `available`, `scheduled`, `running`, `retryable`, `completed`, `cancelled` or
    /// `discarded`.
    pub status: String,
    /// Attempts started so far.
    pub attempts: i32,
    pub max_attempts: i32,
    /// Times the job was taken back from a worker that died while running it.
    pub recoveries: i32,
    /// When the job runs next (or last became due).
    pub run_at: DateTime<Utc>,
    pub locked_by: Option<String>,
    pub done_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub payload: serde_json::Value,
    pub attempt_history: Vec<AttemptView>,
}

impl From<job_ops::JobDetails> for JobView {
    fn from(d: job_ops::JobDetails) -> Self {
        let job = d.job;
        Self {
            status: job.state.to_string(),
            id: job.id,
            queue: job.queue,
            attempts: job.attempt,
            max_attempts: job.max_attempts,
            recoveries: job.recoveries,
            run_at: job.run_at,
            locked_by: job.locked_by,
            done_at: job.finished_at,
            last_error: job.last_error,
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

    /// Jobs by filter, newest first.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/", method = "get")]
    async fn list(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        queue: Query<Option<String>>,
        status: Query<Option<String>>,
        since: Query<Option<DateTime<Utc>>>,
        until: Query<Option<DateTime<Utc>>>,
        error: Query<Option<String>>,
        integration: Query<Option<Uuid>>,
        before: Query<Option<String>>,
        limit: Query<Option<i64>>,
    ) -> Result<Json<JobPage>, ApiError> {
        let limit = limit.0.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::bad_request("limit must be 1 to 500"));
        }
        let filter = checked(JobFilter {
            queue: queue.0,
            status: status.0,
            since: since.0,
            until: until.0,
            error: error.0,
            integration: integration.0,
            ..JobFilter::default()
        })?;
        let jobs = job_ops::list(&state.pool, &filter, before.0.as_deref(), limit).await?;
        let next_before = (jobs.len() as i64 == limit)
            .then(|| jobs.last().map(|j| j.id.clone()))
            .flatten();
        Ok(Json(JobPage { jobs, next_before }))
    }

    /// Per queue: jobs by status, oldest due job's age, failure rate over the last hour.
    #[oai(path = "/stats", method = "get")]
    async fn stats(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
    ) -> Result<Json<Vec<QueueStatsView>>, ApiError> {
        let stats = job_ops::stats(&state.pool).await?;
        Ok(Json(
            stats
                .into_iter()
                .map(|q| QueueStatsView {
                    failure_rate_last_hour: if q.attempts_last_hour == 0 {
                        0.0
                    } else {
                        q.failed_attempts_last_hour as f64 / q.attempts_last_hour as f64
                    },
                    queue: q.queue,
                    counts: q
                        .counts
                        .into_iter()
                        .map(|(status, count)| StatusCount {
                            status: status.to_string(),
                            count,
                        })
                        .collect(),
                    oldest_pending_seconds: q.oldest_due_secs,
                    attempts_last_hour: q.attempts_last_hour,
                })
                .collect(),
        ))
    }

    /// Replay discarded and cancelled jobs matching the filter: fresh attempt budget, due
    /// now, history kept, reason stored. Jobs in other states are left alone
    /// (idempotent).
    #[oai(path = "/replay", method = "post")]
    async fn replay(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        body: Json<BulkRequest>,
    ) -> Result<Json<BulkResult>, ApiError> {
        bulk(&state, body.0, job_ops::Action::Replay).await
    }

    /// Cancel jobs that have not ended (available, scheduled, retryable, running)
    /// matching the filter: they become `cancelled` and their de-duplication key is free
    /// again. A running attempt is not interrupted, but its result is only recorded.
    #[oai(path = "/cancel", method = "post")]
    async fn cancel(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        body: Json<BulkRequest>,
    ) -> Result<Json<BulkResult>, ApiError> {
        bulk(&state, body.0, job_ops::Action::Cancel).await
    }

    /// One job with its payload and every attempt.
    #[oai(path = "/:id", method = "get")]
    async fn show(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        id: Path<String>,
    ) -> Result<Json<JobView>, ApiError> {
        job_ops::show(&state.pool, &id.0)
            .await?
            .map(|d| Json(d.into()))
            .ok_or_else(|| ApiError::not_found(format!("no job `{}`", id.0)))
    }
}
