//! What operators see of a job: its row in the apalis table, our status vocabulary,
//! and every attempt from the attempt history.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

/// Status names operators use (apalis's raw status plus the attempt budget and run time).
#[macro_export]
macro_rules! status_sql {
    () => {
        "CASE
    WHEN status = 'Done' THEN 'done'
    WHEN status = 'Killed' THEN 'killed'
    WHEN status IN ('Queued', 'Running') THEN 'running'
    WHEN status = 'Failed' AND attempts >= max_attempts THEN 'failed'
    WHEN status = 'Failed' THEN 'retrying'
    WHEN run_at > now() THEN 'scheduled'
    ELSE 'pending' END"
    };
}

/// The job's last error as operators read it (apalis prefixes permanent ones with
/// `AbortError: `).
#[macro_export]
macro_rules! last_error_sql {
    () => {
        "regexp_replace(last_result ->> 'Err', '^AbortError: ', '')"
    };
}

#[derive(Debug, Clone)]
pub struct JobDetails {
    pub id: String,
    pub queue: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub locked_by: Option<String>,
    pub done_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub payload: serde_json::Value,
    pub history: Vec<AttemptRow>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: String,
    pub error: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
}

pub async fn show(pool: &PgPool, id: &str) -> Result<Option<JobDetails>, sqlx::Error> {
    let query = concat!(
        "SELECT id, job_type, ",
        status_sql!(),
        " AS state, attempts, max_attempts, run_at, lock_by, done_at, ",
        last_error_sql!(),
        " AS last_error, job
         FROM apalis.jobs WHERE id = $1"
    );
    let Some(row) = sqlx::query(query).bind(id).fetch_optional(pool).await? else {
        return Ok(None);
    };
    let history = sqlx::query_as(
        "SELECT attempt, worker, started_at, finished_at, outcome, error, next_run_at
         FROM job_attempts WHERE job_id = $1 ORDER BY attempt, id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let raw: Vec<u8> = row.try_get("job")?;
    Ok(Some(JobDetails {
        id: row.try_get("id")?,
        queue: row.try_get("job_type")?,
        status: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        run_at: row.try_get("run_at")?,
        locked_by: row.try_get("lock_by")?,
        done_at: row.try_get("done_at")?,
        last_error: row.try_get("last_error")?,
        payload: serde_json::from_slice(&raw)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&raw).into())),
        history,
    }))
}
