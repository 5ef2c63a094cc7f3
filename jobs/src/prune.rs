//! `maintenance.prune`: retention. Deletes finished jobs (done or killed) and their attempt
//! history once older than the retention period. Failed jobs (retry budget spent) are
//! kept until an operator replays or cancels them.

use serde::{Deserialize, Serialize};

use crate::core::{Job, JobContext, JobError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prune {
    pub older_than_days: u32,
}

impl Job for Prune {
    const QUEUE: &'static str = "maintenance.prune";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let days = f64::from(self.older_than_days);
        let mut tx = ctx.pool.begin().await?;
        let jobs: i64 = sqlx::query_scalar(
            "WITH gone AS (
                 DELETE FROM apalis.jobs
                 WHERE status IN ('Done', 'Killed')
                   AND done_at < now() - $1 * interval '1 day'
                 RETURNING id),
             history AS (DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM gone))
             SELECT count(*) FROM gone",
        )
        .bind(days)
        .fetch_one(&mut *tx)
        .await?;
        // Attempts of jobs that no longer exist at all (e.g. deleted by hand).
        let orphans = sqlx::query(
            "DELETE FROM job_attempts a
             WHERE a.finished_at < now() - $1 * interval '1 day'
               AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.id = a.job_id)",
        )
        .bind(days)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(jobs, orphan_attempts = orphans.rows_affected(), "pruned");
        Ok(())
    }
}
