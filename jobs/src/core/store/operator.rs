//! What operators do with jobs (admin API, CLI, dashboard and metrics all come here):
//! list by filter (newest first), show one with its attempt history, replay or cancel
//! by filter with a recorded reason, per-queue statistics, and retention. Job ids are
//! ULIDs, so their order is creation order and a time range is an id range.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{JobState, storable_text};

/// Which jobs an operation applies to; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exactly these job ids.
    pub ids: Vec<String>,
    pub queue: Option<String>,
    pub state: Option<JobState>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Substring of the last error.
    pub error: Option<String>,
    /// Jobs whose payload names this integration.
    pub integration: Option<Uuid>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub queue: String,
    pub state: JobState,
    pub attempt: i32,
    pub max_attempts: i32,
    pub recoveries: i32,
    pub run_at: DateTime<Utc>,
    /// The worker running the job (or, for a completed job, the one that completed it).
    pub locked_by: Option<String>,
    pub locked_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

impl JobRow {
    /// Creation time, from the id.
    pub fn created_at(&self) -> DateTime<Utc> {
        ulid::Ulid::from_string(&self.id)
            .ok()
            .and_then(|u| DateTime::from_timestamp_millis(u.timestamp_ms() as i64))
            .unwrap_or_default()
    }
}

const JOB_COLUMNS: &str = "id, queue, state, attempt, max_attempts, recoveries, run_at, locked_by, locked_at, finished_at, last_error";

fn ulid_bound(at: DateTime<Utc>) -> String {
    ulid::Ulid::from_parts(at.timestamp_millis().max(0) as u64, 0).to_string()
}

/// `SELECT <columns> FROM jobs WHERE <filter>`, ready for more clauses.
fn select(columns: &str, filter: &Filter) -> QueryBuilder<Postgres> {
    let mut q = QueryBuilder::new(format!("SELECT {columns} FROM jobs WHERE true"));
    if !filter.ids.is_empty() {
        q.push(" AND id = ANY(")
            .push_bind(filter.ids.clone())
            .push(")");
    }
    if let Some(queue) = &filter.queue {
        q.push(" AND queue = ").push_bind(queue.clone());
    }
    if let Some(state) = filter.state {
        q.push(" AND state = ").push_bind(state);
    }
    if let Some(since) = filter.since {
        q.push(" AND id >= ").push_bind(ulid_bound(since));
    }
    if let Some(until) = filter.until {
        q.push(" AND id < ").push_bind(ulid_bound(until));
    }
    if let Some(error) = &filter.error {
        q.push(" AND strpos(lower(last_error), lower(")
            .push_bind(error.clone())
            .push(")) > 0");
    }
    if let Some(integration) = filter.integration {
        q.push(" AND convert_from(payload, 'UTF8')::jsonb -> 'payload' ->> 'integration_id' = ")
            .push_bind(integration.to_string());
    }
    q
}

/// Jobs matching `filter`, newest first, created before job `before` (for paging).
pub async fn list(
    pool: &PgPool,
    filter: &Filter,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let mut q = select(JOB_COLUMNS, filter);
    if let Some(before) = before {
        q.push(" AND id < ").push_bind(before.to_owned());
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(pool).await
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

#[derive(Debug, Clone)]
pub struct JobDetails {
    pub job: JobRow,
    pub payload: serde_json::Value,
    pub history: Vec<AttemptRow>,
}

/// One job with its payload and every attempt.
pub async fn show(pool: &PgPool, id: &str) -> Result<Option<JobDetails>, sqlx::Error> {
    let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT payload FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let Some((raw,)) = row else {
        return Ok(None);
    };
    let filter = Filter {
        ids: vec![id.to_owned()],
        ..Filter::default()
    };
    let Some(job) = list(pool, &filter, None, 1).await?.pop() else {
        return Ok(None);
    };
    let mut history: Vec<AttemptRow> = sqlx::query_as(
        "SELECT attempt, worker, started_at, finished_at, outcome, error, next_run_at
         FROM job_attempts WHERE job_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    history.extend(completing_attempt(&job));
    Ok(Some(JobDetails {
        job,
        payload: serde_json::from_slice(&raw)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&raw).into())),
        history,
    }))
}

/// The attempt that completed a job, which the job row records instead of a history
/// row (its start is when its worker claimed it).
fn completing_attempt(job: &JobRow) -> Option<AttemptRow> {
    if job.state != JobState::Completed {
        return None;
    }
    Some(AttemptRow {
        attempt: job.attempt,
        worker: job.locked_by.clone()?,
        started_at: job.locked_at?,
        finished_at: job.finished_at?,
        outcome: JobState::Completed.as_str().to_owned(),
        error: None,
        next_run_at: None,
    })
}

/// What an operator does to jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Discarded and cancelled jobs get a fresh attempt budget and are due now; the
    /// attempt history stays. Jobs in any other state are left alone, so replaying
    /// twice does nothing the second time. A replayed cancelled job runs without its
    /// de-duplication key (cancelling released it).
    Replay,
    /// Waiting and running jobs become `cancelled` with the reason, and their
    /// de-duplication key is free again. A running attempt is not interrupted, but its
    /// result no longer changes the job.
    Cancel,
}

impl Action {
    /// The states the action applies to.
    pub fn states(self) -> &'static [JobState] {
        match self {
            Action::Replay => &[JobState::Discarded, JobState::Cancelled],
            Action::Cancel => &[
                JobState::Available,
                JobState::Scheduled,
                JobState::Retryable,
                JobState::Running,
            ],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Cancel => "cancel",
        }
    }
}

fn in_states(q: &mut QueryBuilder<Postgres>, action: Action) {
    q.push(" AND state = ANY(")
        .push_bind(action.states().to_vec())
        .push(")");
}

/// How many jobs `action` on `filter` would touch (its dry run).
pub async fn count(pool: &PgPool, filter: &Filter, action: Action) -> Result<i64, sqlx::Error> {
    let mut q = select("count(*)", filter);
    in_states(&mut q, action);
    q.build_query_scalar().fetch_one(pool).await
}

/// Applies `action` to the jobs matching `filter`, recording `reason` with each; returns
/// the ids it touched.
pub async fn apply(
    pool: &PgPool,
    filter: &Filter,
    action: Action,
    reason: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ids = act(&mut tx, filter, action, reason).await?;
    tx.commit().await?;
    Ok(ids)
}

async fn act(
    conn: &mut PgConnection,
    filter: &Filter,
    action: Action,
    reason: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let mut q = select("id", filter);
    in_states(&mut q, action);
    q.push(" ORDER BY id FOR UPDATE");
    let ids: Vec<String> = q.build_query_scalar().fetch_all(&mut *conn).await?;
    let done: Vec<(String, String)> =
        match action {
            Action::Replay => sqlx::query_as(
                // A cancelled job gave up its de-duplication key, and another job may
                // hold it now: it runs again without one.
                "UPDATE jobs SET state = 'available', attempt = 0, recoveries = 0, run_at = now(),
                     locked_by = NULL, locked_at = NULL, finished_at = NULL,
                     dedupe_key = CASE WHEN state = 'cancelled' THEN NULL ELSE dedupe_key END
                 WHERE id = ANY($1) AND state IN ('discarded', 'cancelled')
                 RETURNING id, queue",
            )
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?,
            Action::Cancel => {
                sqlx::query_as(
                    "UPDATE jobs SET state = 'cancelled', finished_at = now(), last_error = $2
                 WHERE id = ANY($1) AND state IN ('available', 'scheduled', 'retryable', 'running')
                 RETURNING id, queue",
                )
                .bind(&ids)
                .bind(storable_text(&format!(
                    "cancelled by an operator: {reason}"
                )))
                .fetch_all(&mut *conn)
                .await?
            }
        };
    let ids: Vec<String> = done.iter().map(|(id, _)| id.clone()).collect();
    sqlx::query(
        "INSERT INTO job_operator_actions (job_id, action, reason)
         SELECT unnest($1::text[]), $2, $3",
    )
    .bind(&ids)
    .bind(action.as_str())
    .bind(storable_text(reason))
    .execute(&mut *conn)
    .await?;
    if action == Action::Replay {
        // Wake the workers of each queue now rather than at their next poll.
        let mut queues: Vec<String> = done.into_iter().map(|(_, q)| q).collect();
        queues.sort_unstable();
        queues.dedup();
        super::worker::wake(&mut *conn, &queues).await?;
    }
    Ok(ids)
}

#[derive(Debug, Clone)]
pub struct QueueStats {
    pub queue: String,
    pub counts: Vec<(JobState, i64)>,
    pub oldest_due_secs: Option<f64>,
    pub attempts_last_hour: i64,
    pub failed_attempts_last_hour: i64,
}

/// Per queue: jobs by state, age of the oldest due job, attempts and failures in the
/// last hour.
pub async fn stats(pool: &PgPool) -> Result<Vec<QueueStats>, sqlx::Error> {
    let counts: Vec<(String, JobState, i64)> =
        sqlx::query_as("SELECT queue, state, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")
            .fetch_all(pool)
            .await?;
    let ages: Vec<(String, f64)> = sqlx::query_as(
        "SELECT queue, EXTRACT(EPOCH FROM now() - min(run_at))::float8 FROM jobs
         WHERE state IN ('available', 'scheduled', 'retryable') AND run_at <= now() GROUP BY 1",
    )
    .fetch_all(pool)
    .await?;
    // Attempts that completed their job are on the job rows, the others in the history.
    let hour: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT queue, sum(attempts)::bigint, sum(failed)::bigint FROM (
             SELECT queue, count(*) AS attempts,
                    count(*) FILTER (WHERE outcome NOT IN ('completed', 'snoozed')) AS failed
             FROM job_attempts WHERE finished_at > now() - interval '1 hour' GROUP BY 1
             UNION ALL
             SELECT queue, count(*), 0 FROM jobs
             WHERE state = 'completed' AND locked_by IS NOT NULL
               AND finished_at > now() - interval '1 hour' GROUP BY 1
         ) a GROUP BY 1",
    )
    .fetch_all(pool)
    .await?;
    let mut queues: Vec<String> = counts
        .iter()
        .map(|c| c.0.clone())
        .chain(hour.iter().map(|h| h.0.clone()))
        .collect();
    queues.sort();
    queues.dedup();
    Ok(queues
        .into_iter()
        .map(|queue| QueueStats {
            counts: counts
                .iter()
                .filter(|c| c.0 == queue)
                .map(|c| (c.1, c.2))
                .collect(),
            oldest_due_secs: ages.iter().find(|a| a.0 == queue).map(|a| a.1),
            attempts_last_hour: hour.iter().find(|h| h.0 == queue).map_or(0, |h| h.1),
            failed_attempts_last_hour: hour.iter().find(|h| h.0 == queue).map_or(0, |h| h.2),
            queue,
        })
        .collect())
}

/// Retention: deletes jobs that ended (completed, cancelled, discarded) more than
/// `days` ago, with their attempt history and operator actions, and history rows whose
/// job no longer exists. Returns (jobs, orphan history rows) deleted.
pub async fn prune(pool: &PgPool, days: u32) -> Result<(i64, u64), sqlx::Error> {
    let days = f64::from(days);
    let mut tx = pool.begin().await?;
    let jobs: i64 = sqlx::query_scalar(
        "WITH gone AS (
             DELETE FROM jobs
             WHERE state IN ('completed', 'cancelled', 'discarded')
               AND finished_at < now() - $1 * interval '1 day'
             RETURNING id),
         history AS (DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM gone)),
         actions AS (DELETE FROM job_operator_actions WHERE job_id IN (SELECT id FROM gone))
         SELECT count(*) FROM gone",
    )
    .bind(days)
    .fetch_one(&mut *tx)
    .await?;
    let orphans = sqlx::query(
        "DELETE FROM job_attempts a
         WHERE a.finished_at < now() - $1 * interval '1 day'
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = a.job_id)",
    )
    .bind(days)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((jobs, orphans.rows_affected()))
}
