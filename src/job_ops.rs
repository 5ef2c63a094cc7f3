//! The operator's view of jobs for the admin API, CLI and dashboard: the filter and
//! summary shapes of the OpenAPI document, over the job core's store
//! (`syncline_jobs::core::store::operator`), which holds every query.

use chrono::{DateTime, Utc};
use syncline_jobs::core::{
    JobState,
    store::operator::{self, Filter, JobRow},
};
use uuid::Uuid;

pub use operator::{Action, JobDetails, QueueStats, apply, count, show, stats};

/// Which jobs an operation applies to; every set field must match.
#[derive(Debug, Clone, Default, poem_openapi::Object)]
pub struct JobFilter {
    /// Exactly these job ids.
    #[oai(default)]
    pub ids: Vec<String>,
    pub queue: Option<String>,
    /// One of `available`, `scheduled`, `running`, `retryable`, `completed`,
    /// `cancelled`, `discarded`.
    pub status: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Substring of the last error (case-insensitive).
    pub error: Option<String>,
    /// Jobs whose payload names this integration.
    pub integration: Option<Uuid>,
}

/// A status name that is not a job state.
#[derive(Debug, thiserror::Error)]
#[error("status must be one of {}", state_names().join(", "))]
pub struct UnknownStatus;

pub fn state_names() -> Vec<&'static str> {
    JobState::ALL.iter().map(|s| s.as_str()).collect()
}

impl TryFrom<JobFilter> for Filter {
    type Error = UnknownStatus;

    fn try_from(f: JobFilter) -> Result<Self, UnknownStatus> {
        let state = match f.status.as_deref() {
            None => None,
            Some(name) => Some(JobState::parse(name).ok_or(UnknownStatus)?),
        };
        Ok(Filter {
            ids: f.ids,
            queue: f.queue,
            state,
            since: f.since,
            until: f.until,
            error: f.error,
            integration: f.integration,
        })
    }
}

#[derive(Debug, Clone, poem_openapi::Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobSummary {
    pub id: String,
    pub queue: String,
    /// The job's state (see `JobFilter.status`).
    pub status: String,
    /// Attempts started so far.
    pub attempts: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub run_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

impl From<JobRow> for JobSummary {
    fn from(j: JobRow) -> Self {
        Self {
            created_at: j.created_at(),
            id: j.id,
            queue: j.queue,
            status: j.state.to_string(),
            attempts: j.attempt,
            max_attempts: j.max_attempts,
            run_at: j.run_at,
            last_error: j.last_error,
        }
    }
}

/// Jobs matching `filter`, newest first, created before job `before` (for paging).
pub async fn list(
    pool: &sqlx::PgPool,
    filter: &Filter,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<JobSummary>, sqlx::Error> {
    let rows = operator::list(pool, filter, before, limit).await?;
    Ok(rows.into_iter().map(JobSummary::from).collect())
}
