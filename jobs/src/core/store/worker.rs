//! The worker's statements: claim a batch, acknowledge finished attempts, keep workers
//! alive, take back what dead workers held, hand back what a stopping worker never
//! started.
//!
//! A claim moves jobs straight to `running` and counts the attempt there, so a job whose
//! worker dies mid-run has still used it. An acknowledgement writes the new state and
//! the attempt's history row in one statement, for a whole batch.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

use super::{JobState, storable_text};

/// A job claimed for a worker.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: String,
    pub payload: Vec<u8>,
    /// This attempt's number, from 1.
    pub attempt: i32,
    pub max_attempts: i32,
    pub fair_key: Option<String>,
    pub run_at: DateTime<Utc>,
    /// Identifies this claim: the acknowledgement of this attempt and a hand-back
    /// must present it, so a late result of an earlier claim of the same job by the
    /// same worker (after a cancel and replay, or a takeover) changes nothing.
    pub claimed_at: DateTime<Utc>,
}

/// How a queue is claimed from.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRules {
    /// The de-duplication key is dropped as the job starts (it holds only while waiting).
    pub release_dedupe_key: bool,
    /// Round-robin over `fair_key`s rather than oldest first.
    pub fair: bool,
}

const CLAIM_SET: &str = "
    UPDATE jobs j
    SET state = 'running', locked_by = $1, locked_at = clock_timestamp(),
        attempt = j.attempt + 1,
        dedupe_key = CASE WHEN $4 THEN NULL ELSE j.dedupe_key END
    FROM picked
    WHERE j.id = picked.id
    RETURNING j.id, j.payload, j.attempt, j.max_attempts, j.fair_key, j.run_at,
              j.locked_at AS claimed_at";

/// Oldest due jobs first, from just after `($5, $6)` in (run time, id) order.
const PICK_OLDEST: &str = "
    WITH picked AS (
        SELECT id FROM jobs
        WHERE queue = $2 AND state IN ('available', 'scheduled', 'retryable') AND run_at <= now()
          AND (run_at, id) > ($5, $6)
        ORDER BY run_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED)";

/// Round robin: the fair keys with due jobs, in key order from just after `$5` (the
/// last key this worker served) and wrapping round, then an equal share of the batch
/// from each key, oldest first within a key. The keys are found with a loose index
/// scan, so a key with ten thousand due jobs costs one index probe, not ten thousand.
const PICK_FAIR: &str = "
    WITH RECURSIVE after_pivot(k, n) AS (
        (SELECT fair_key, 1 FROM jobs
         WHERE queue = $2 AND state IN ('available', 'scheduled', 'retryable')
           AND fair_key > $5 AND run_at <= now()
         ORDER BY fair_key LIMIT 1)
        UNION ALL
        SELECT (SELECT fair_key FROM jobs
                WHERE queue = $2 AND state IN ('available', 'scheduled', 'retryable')
                  AND fair_key > a.k AND run_at <= now()
                ORDER BY fair_key LIMIT 1), a.n + 1
        FROM after_pivot a WHERE a.k IS NOT NULL AND a.n < $3
    ),
    wrapped(k, n) AS (
        (SELECT fair_key, 1 FROM jobs
         WHERE queue = $2 AND state IN ('available', 'scheduled', 'retryable')
           AND fair_key IS NOT NULL AND run_at <= now()
         ORDER BY fair_key LIMIT 1)
        UNION ALL
        SELECT (SELECT fair_key FROM jobs
                WHERE queue = $2 AND state IN ('available', 'scheduled', 'retryable')
                  AND fair_key > w.k AND run_at <= now()
                ORDER BY fair_key LIMIT 1), w.n + 1
        FROM wrapped w WHERE w.k IS NOT NULL AND w.k <= $5 AND w.n < $3
    ),
    keys AS (
        SELECT k FROM (
            SELECT k, n FROM after_pivot WHERE k IS NOT NULL
            UNION ALL
            SELECT k, n + $3 FROM wrapped WHERE k IS NOT NULL AND k <= $5
        ) all_keys
        ORDER BY n LIMIT $3
    ),
    share AS (SELECT GREATEST(1, ceil($3::float8 / GREATEST(count(*), 1)))::int AS per_key FROM keys),
    picked AS (
        SELECT p.id FROM keys CROSS JOIN share CROSS JOIN LATERAL (
            SELECT id FROM jobs
            WHERE queue = $2 AND fair_key = keys.k
              AND state IN ('available', 'scheduled', 'retryable') AND run_at <= now()
            ORDER BY run_at, id
            LIMIT share.per_key
            FOR UPDATE SKIP LOCKED) p
        LIMIT $3)";

/// Where a worker's next claim starts: after the last job it claimed (in run time and
/// id order for oldest-first queues, in key order for fair ones), so a claim never
/// walks the index entries of jobs claimed before it (until vacuum removes them, a
/// queue drained from its start would read every one of them again, each claim).
/// Jobs that become due behind the cursor (a retry, a job handed back, a late commit)
/// are found by the claims that start from the beginning: after a short claim, and
/// at least every [`Cursor::RESCAN_AFTER`].
#[derive(Debug, Clone)]
pub struct Cursor {
    after: Option<(DateTime<Utc>, String)>,
    fair_key: String,
    since: std::time::Instant,
}

impl Default for Cursor {
    fn default() -> Self {
        Self {
            after: None,
            fair_key: String::new(),
            since: std::time::Instant::now(),
        }
    }
}

impl Cursor {
    pub const RESCAN_AFTER: Duration = Duration::from_secs(1);

    fn start(&mut self) -> (DateTime<Utc>, String) {
        if self.since.elapsed() >= Self::RESCAN_AFTER {
            self.after = None;
            self.since = std::time::Instant::now();
        }
        self.after
            .clone()
            .unwrap_or((DateTime::<Utc>::UNIX_EPOCH, String::new()))
    }

    fn advance(&mut self, claimed: &[Claimed], limit: usize) {
        self.after = if claimed.len() < limit {
            None
        } else {
            claimed.iter().map(|c| (c.run_at, c.id.clone())).max()
        };
        if let Some(last) = claimed.iter().filter_map(|c| c.fair_key.as_ref()).max() {
            self.fair_key.clone_from(last);
        }
    }
}

/// Claims up to `limit` due jobs of `queue` for `worker`, from `cursor` on.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    queue: &str,
    limit: usize,
    rules: ClaimRules,
    cursor: &mut Cursor,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let sql = if rules.fair {
        format!("{PICK_FAIR}{CLAIM_SET}")
    } else {
        format!("{PICK_OLDEST}{CLAIM_SET}")
    };
    let query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(worker)
        .bind(queue)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .bind(rules.release_dedupe_key);
    let query = if rules.fair {
        query.bind(cursor.fair_key.clone())
    } else {
        let (run_at, id) = cursor.start();
        query.bind(run_at).bind(id)
    };
    let claimed: Vec<Claimed> = query.fetch_all(pool).await?;
    cursor.advance(&claimed, limit);
    Ok(claimed)
}

/// What an attempt came to, as recorded in its history row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Completed,
    RetryScheduled,
    /// Asked to run again later; the attempt is given back.
    Snoozed,
    /// Permanent error, or the retry budget is spent.
    Discarded,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::RetryScheduled => "retry_scheduled",
            AttemptOutcome::Snoozed => "snoozed",
            AttemptOutcome::Discarded => "discarded",
        }
    }

    /// The job's state after an attempt with this outcome.
    pub fn next_state(self) -> JobState {
        match self {
            AttemptOutcome::Completed => JobState::Completed,
            AttemptOutcome::RetryScheduled => JobState::Retryable,
            AttemptOutcome::Snoozed => JobState::Scheduled,
            AttemptOutcome::Discarded => JobState::Discarded,
        }
    }
}

/// One finished attempt, waiting to be acknowledged.
#[derive(Debug, Clone)]
pub struct Finished {
    pub job_id: String,
    pub queue: &'static str,
    pub worker: String,
    /// The claim this attempt ran under ([`Claimed::claimed_at`]).
    pub claimed_at: DateTime<Utc>,
    pub attempt: i32,
    pub outcome: AttemptOutcome,
    /// For retries and snoozes: when to run again, from the acknowledgement.
    pub run_in: Option<Duration>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// One statement for a batch: the jobs' new states, then the history rows. A row
/// matches only under the claim that ran the attempt (worker and claim time), so a late
/// result never changes a job cancelled, taken over or claimed again meanwhile; its
/// attempt is still recorded. The job row's attempt budget is the one that counts (it
/// may differ from the job kind's policy after an upgrade or an operator's change): a
/// retry past it discards. (Rows are found by primary key, never by a join the planner
/// could turn into a scan: `id = ANY($1)`.)
const ACKNOWLEDGE: &str = "
    WITH r AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int[],
                             $6::text[], $7::job_state[], $8::float8[], $9::text[],
                             $10::timestamptz[], $11::timestamptz[])
            AS r(id, queue, worker, claimed_at, attempt, outcome, state, delay_ms, error,
                 started_at, finished_at)
    ),
    acked AS (
        UPDATE jobs j
        SET state = CASE WHEN r.state = 'retryable' AND j.attempt >= j.max_attempts
                         THEN 'discarded'::job_state ELSE r.state END,
            run_at = CASE WHEN r.delay_ms IS NULL
                               OR (r.state = 'retryable' AND j.attempt >= j.max_attempts)
                          THEN j.run_at
                          ELSE now() + r.delay_ms * interval '1 millisecond' END,
            attempt = CASE WHEN r.outcome = 'snoozed' THEN j.attempt - 1 ELSE j.attempt END,
            last_error = CASE WHEN r.outcome = 'snoozed' THEN j.last_error ELSE r.error END,
            locked_by = CASE WHEN r.state = 'completed' THEN j.locked_by END,
            locked_at = CASE WHEN r.state = 'completed' THEN j.locked_at END,
            finished_at = CASE WHEN r.state IN ('completed', 'discarded')
                                 OR (r.state = 'retryable' AND j.attempt >= j.max_attempts)
                               THEN now() END
        FROM r
        WHERE j.id = ANY($1) AND j.id = r.id AND j.state = 'running'
          AND j.locked_by = r.worker AND j.locked_at = r.claimed_at
        RETURNING j.id, j.run_at, j.state
    )
    INSERT INTO job_attempts
        (job_id, queue, attempt, worker, started_at, finished_at, outcome, error, next_run_at)
    SELECT r.id, r.queue, r.attempt, r.worker, r.started_at, r.finished_at,
           CASE WHEN acked.state = 'discarded' THEN 'discarded' ELSE r.outcome END, r.error,
           CASE WHEN r.delay_ms IS NOT NULL AND acked.state <> 'discarded' THEN acked.run_at END
    FROM r LEFT JOIN acked ON acked.id = r.id
    -- The attempt that completed its job is on the job row.
    WHERE acked.state IS DISTINCT FROM 'completed'";

/// Writes a batch of finished attempts: each job's new state (unless another worker
/// took it over, or an operator cancelled it, meanwhile) and each attempt's history row
/// (except the one that completed its job, which the job row keeps).
pub async fn acknowledge(pool: &PgPool, batch: &[Finished]) -> Result<(), sqlx::Error> {
    let text = |f: fn(&Finished) -> String| batch.iter().map(f).collect::<Vec<_>>();
    // The planner's estimate of running jobs comes from the last ANALYZE, often taken
    // when none ran: it then joins the results to the jobs with a nested loop,
    // quadratic in the batch (measured: 50 ms for 300 results instead of 3 ms). A hash
    // join is right at every batch size, so nested loops are off for this statement.
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL enable_nestloop = off")
        .execute(&mut *tx)
        .await?;
    sqlx::query(ACKNOWLEDGE)
        .bind(text(|f| f.job_id.clone()))
        .bind(text(|f| f.queue.to_owned()))
        .bind(text(|f| f.worker.clone()))
        .bind(batch.iter().map(|f| f.claimed_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|f| f.attempt).collect::<Vec<_>>())
        .bind(text(|f| f.outcome.as_str().to_owned()))
        .bind(
            batch
                .iter()
                .map(|f| f.outcome.next_state())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|f| f.run_in.map(|d| d.as_secs_f64() * 1000.0))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|f| f.error.as_deref().map(storable_text))
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|f| f.started_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|f| f.finished_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Marks `workers` (name, queue) alive now.
pub async fn heartbeat(
    pool: &PgPool,
    workers: &[(String, &'static str)],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO job_workers (name, queue, last_seen)
         SELECT * FROM unnest($1::text[], $2::text[]), now()
         ON CONFLICT (name) DO UPDATE SET last_seen = now(), queue = EXCLUDED.queue",
    )
    .bind(workers.iter().map(|w| w.0.clone()).collect::<Vec<_>>())
    .bind(workers.iter().map(|w| w.1).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(())
}

/// Takes back running jobs whose worker is dead: not seen for `orphaned_after`, or
/// `restarted` (a worker starting again under its old name holds nothing yet). Each
/// goes back to `retryable`, due now, unless it has been taken back `max_recoveries`
/// times or its attempts are used up: then it is `discarded` with an error saying so.
/// Returns the queues of jobs made due again, to wake their workers.
pub async fn take_back_orphans(
    pool: &PgPool,
    orphaned_after: Duration,
    max_recoveries: u32,
    restarted: Option<&str>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH dead AS (
             SELECT j.id, j.locked_by, j.locked_at FROM jobs j
             WHERE j.state = 'running'
               AND (j.locked_by = $3 OR NOT EXISTS (
                   SELECT 1 FROM job_workers w
                   WHERE w.name = j.locked_by
                     AND w.last_seen > now() - $1 * interval '1 millisecond'))
             FOR UPDATE OF j SKIP LOCKED
         ),
         taken AS (
             UPDATE jobs j
             SET recoveries = j.recoveries + 1, locked_by = NULL, locked_at = NULL, run_at = now(),
                 state = CASE WHEN j.recoveries + 1 >= $2 OR j.attempt >= j.max_attempts
                              THEN 'discarded' ELSE 'retryable' END::job_state,
                 finished_at = CASE WHEN j.recoveries + 1 >= $2 OR j.attempt >= j.max_attempts
                                    THEN now() END,
                 last_error = CASE
                     WHEN j.recoveries + 1 >= $2 THEN format(
                         'its worker died while running it %s times (the limit); not run again',
                         j.recoveries + 1)
                     ELSE format('its worker (%s) died while running it', dead.locked_by) END
             FROM dead
             WHERE j.id = dead.id
             RETURNING j.id, j.queue, j.attempt, j.state, j.last_error,
                       dead.locked_by AS worker, dead.locked_at AS started_at
         ),
         history AS (
             INSERT INTO job_attempts
                 (job_id, queue, attempt, worker, started_at, finished_at, outcome, error, next_run_at)
             SELECT id, queue, attempt, COALESCE(worker, ''), COALESCE(started_at, now()), now(),
                    'crashed', last_error, CASE WHEN state = 'retryable' THEN now() END
             FROM taken
         )
         SELECT DISTINCT queue FROM taken WHERE state = 'retryable'",
    )
    .bind(orphaned_after.as_secs_f64() * 1000.0)
    .bind(i32::try_from(max_recoveries).unwrap_or(i32::MAX))
    .bind(restarted)
    .fetch_all(pool)
    .await
}

/// Gives back jobs `worker` claimed but never started (it is stopping): they are due
/// again at once and the claim's attempt is returned. Each is named by its id and
/// claim time.
pub async fn hand_back(
    pool: &PgPool,
    worker: &str,
    claims: &[(String, DateTime<Utc>)],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs j
         SET state = CASE WHEN j.attempt > 1 THEN 'retryable' ELSE 'available' END::job_state,
             attempt = j.attempt - 1, locked_by = NULL, locked_at = NULL
         FROM unnest($1::text[], $2::timestamptz[]) AS c(id, claimed_at)
         WHERE j.id = ANY($1) AND j.id = c.id AND j.locked_at = c.claimed_at
           AND j.locked_by = $3 AND j.state = 'running'",
    )
    .bind(claims.iter().map(|c| c.0.clone()).collect::<Vec<_>>())
    .bind(claims.iter().map(|c| c.1).collect::<Vec<_>>())
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Removes stopped workers from the registry: whatever they still hold is taken back at
/// the next check by any live process.
pub async fn retire(pool: &PgPool, workers: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM job_workers WHERE name = ANY($1)")
        .bind(workers)
        .execute(pool)
        .await?;
    Ok(())
}

/// Wakes the workers of `queues` (jobs there became due outside an insert).
pub async fn wake(conn: impl PgExecutor<'_>, queues: &[String]) -> Result<(), sqlx::Error> {
    if queues.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, queue) FROM unnest($2::text[]) AS queue")
        .bind(super::WAKE_CHANNEL)
        .bind(queues)
        .execute(conn)
        .await?;
    Ok(())
}
