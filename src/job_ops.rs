//! Operating on many jobs: list by filter (newest first), replay failed or killed jobs,
//! cancel waiting ones, and per-queue statistics. Job ids are ULIDs, so their order is
//! creation order and a time range is an id range.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::{last_error_sql, status_sql};

/// Which jobs an operation applies to; every set field must match.
#[derive(Debug, Clone, Default, poem_openapi::Object)]
pub struct JobFilter {
    /// Exactly these job ids.
    #[oai(default)]
    pub ids: Vec<String>,
    pub queue: Option<String>,
    /// One of `pending`, `scheduled`, `running`, `retrying`, `failed`, `killed`, `done`.
    pub status: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Substring of the last error.
    pub error: Option<String>,
    /// Jobs whose payload names this integration.
    pub integration: Option<Uuid>,
}

pub const STATUSES: [&str; 7] = [
    "pending",
    "scheduled",
    "running",
    "retrying",
    "failed",
    "killed",
    "done",
];

#[derive(Debug, Clone, poem_openapi::Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobSummary {
    pub id: String,
    pub queue: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub run_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

fn ulid_bound(at: DateTime<Utc>) -> String {
    ulid::Ulid::from_parts(at.timestamp_millis().max(0) as u64, 0).to_string()
}

fn created_at(id: &str) -> DateTime<Utc> {
    ulid::Ulid::from_string(id)
        .ok()
        .and_then(|u| DateTime::from_timestamp_millis(u.timestamp_ms() as i64))
        .unwrap_or_default()
}

/// `SELECT <columns> FROM <jobs with our status> WHERE <filter>`, ready for more clauses.
fn select(columns: &str, filter: &JobFilter) -> QueryBuilder<Postgres> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {columns} FROM (SELECT j.*, {} AS state, {} AS last_error FROM apalis.jobs j) jobs WHERE true",
        status_sql!(),
        last_error_sql!()
    ));
    if !filter.ids.is_empty() {
        q.push(" AND id = ANY(")
            .push_bind(filter.ids.clone())
            .push(")");
    }
    if let Some(queue) = &filter.queue {
        q.push(" AND job_type = ").push_bind(queue.clone());
    }
    if let Some(status) = &filter.status {
        q.push(" AND state = ").push_bind(status.clone());
    }
    if let Some(since) = filter.since {
        q.push(" AND id >= ").push_bind(ulid_bound(since));
    }
    if let Some(until) = filter.until {
        q.push(" AND id < ").push_bind(ulid_bound(until));
    }
    if let Some(error) = &filter.error {
        q.push(" AND last_error ILIKE '%' || ")
            .push_bind(error.clone())
            .push(" || '%'");
    }
    if let Some(integration) = filter.integration {
        q.push(" AND convert_from(job, 'UTF8')::jsonb -> 'payload' ->> 'integration_id' = ")
            .push_bind(integration.to_string());
    }
    q
}

/// Narrows a query from [`select`] to the states `action` applies to.
fn in_states(q: &mut QueryBuilder<Postgres>, action: Action) {
    let states: Vec<String> = action.states().iter().map(|s| s.to_string()).collect();
    q.push(" AND state = ANY(").push_bind(states).push(")");
}

/// Jobs matching `filter`, newest first, created before job `before` (for paging).
pub async fn list(
    pool: &PgPool,
    filter: &JobFilter,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<JobSummary>, sqlx::Error> {
    let mut q = select(
        "id, job_type, state, attempts, max_attempts, run_at, last_error",
        filter,
    );
    if let Some(before) = before {
        q.push(" AND id < ").push_bind(before.to_owned());
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    let rows = q.build().fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            Ok(JobSummary {
                created_at: created_at(&id),
                id,
                queue: r.try_get("job_type")?,
                status: r.try_get("state")?,
                attempts: r.try_get("attempts")?,
                max_attempts: r.try_get("max_attempts")?,
                run_at: r.try_get("run_at")?,
                last_error: r.try_get("last_error")?,
            })
        })
        .collect()
}

/// How many jobs `action` on `filter` would touch (its dry run).
pub async fn count(pool: &PgPool, filter: &JobFilter, action: Action) -> Result<i64, sqlx::Error> {
    let mut q = select("count(*)", filter);
    in_states(&mut q, action);
    q.build_query_scalar().fetch_one(pool).await
}

/// States replay applies to, and cancel.
const REPLAYABLE: [&str; 2] = ["failed", "killed"];
const CANCELLABLE: [&str; 3] = ["pending", "scheduled", "retrying"];

/// What an operator does to jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Failed and killed jobs get a fresh attempt budget and are due now; the attempt
    /// history stays. Jobs in any other state are left alone, so replaying twice does
    /// nothing the second time.
    Replay,
    /// Waiting jobs (pending, scheduled, retrying) are killed with the reason; running
    /// jobs are left to finish.
    Cancel,
}

impl Action {
    fn states(self) -> &'static [&'static str] {
        match self {
            Action::Replay => &REPLAYABLE,
            Action::Cancel => &CANCELLABLE,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Cancel => "cancel",
        }
    }
}

/// Applies `action` to the jobs matching `filter`, recording `reason` with each; returns
/// the ids it touched.
pub async fn apply(
    pool: &PgPool,
    filter: &JobFilter,
    action: Action,
    reason: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ids = act(&mut tx, filter, action, reason).await?;
    tx.commit().await?;
    Ok(ids)
}

async fn act(
    conn: &mut sqlx::PgConnection,
    filter: &JobFilter,
    action: Action,
    reason: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let mut q = select("id, job_type", filter);
    in_states(&mut q, action);
    q.push(" ORDER BY id");
    let targets: Vec<(String, String)> = q.build_query_as().fetch_all(&mut *conn).await?;
    let ids: Vec<String> = targets.iter().map(|(id, _)| id.clone()).collect();
    let done: Vec<(String, String)> = if action == Action::Replay {
        sqlx::query_as(
            "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, run_at = now(), lock_by = NULL,
                 lock_at = NULL, done_at = NULL, last_result = NULL
             WHERE id = ANY($1) AND status IN ('Failed', 'Killed') RETURNING id, job_type",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
    } else {
        sqlx::query_as(
            "UPDATE apalis.jobs SET status = 'Killed', done_at = now(), last_result = $2
             WHERE id = ANY($1) AND status IN ('Pending', 'Failed') AND attempts < max_attempts
             RETURNING id, job_type",
        )
        .bind(&ids)
        .bind(json!({ "Err": format!("cancelled by an operator: {reason}") }))
        .fetch_all(&mut *conn)
        .await?
    };
    let ids: Vec<String> = done.iter().map(|(id, _)| id.clone()).collect();
    sqlx::query("INSERT INTO job_operator_actions (job_id, action, reason) SELECT unnest($1::text[]), $2, $3")
        .bind(&ids)
        .bind(action.as_str())
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    if action == Action::Replay {
        // Wake the workers of each queue now rather than at their next poll.
        let mut queues: Vec<&str> = done.iter().map(|(_, q)| q.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        for queue in queues {
            sqlx::query("SELECT pg_notify('apalis::job::insert', json_build_object('job_type', $1::text, 'id', '', 'run_at', now())::text)")
                .bind(queue)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(ids)
}

#[derive(Debug, Clone)]
pub struct QueueStats {
    pub queue: String,
    pub counts: Vec<(String, i64)>,
    pub oldest_pending_secs: Option<f64>,
    pub attempts_last_hour: i64,
    pub failed_attempts_last_hour: i64,
}

/// Per queue: jobs by status, age of the oldest job due, attempts and failures in the
/// last hour.
pub async fn stats(pool: &PgPool) -> Result<Vec<QueueStats>, sqlx::Error> {
    let counts: Vec<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT job_type, state, count(*) FROM (SELECT job_type, {} AS state FROM apalis.jobs) j
         GROUP BY 1, 2 ORDER BY 1, 2",
        status_sql!()
    )))
    .fetch_all(pool)
    .await?;
    let ages: Vec<(String, f64)> = sqlx::query_as(
        "SELECT job_type, EXTRACT(EPOCH FROM now() - min(run_at))::float8 FROM apalis.jobs
         WHERE status = 'Pending' AND run_at <= now() GROUP BY 1",
    )
    .fetch_all(pool)
    .await?;
    let hour: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT queue, count(*), count(*) FILTER (WHERE outcome <> 'done') FROM job_attempts
         WHERE finished_at > now() - interval '1 hour' GROUP BY 1",
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
                .map(|c| (c.1.clone(), c.2))
                .collect(),
            oldest_pending_secs: ages.iter().find(|a| a.0 == queue).map(|a| a.1),
            attempts_last_hour: hour.iter().find(|h| h.0 == queue).map_or(0, |h| h.1),
            failed_attempts_last_hour: hour.iter().find(|h| h.0 == queue).map_or(0, |h| h.2),
            queue,
        })
        .collect())
}
