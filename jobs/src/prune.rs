//! `maintenance.prune`: retention. Deletes jobs that ended (completed, cancelled,
//! discarded) and their attempt history once older than the retention period.

use serde::{Deserialize, Serialize};

use crate::core::{Job, JobContext, JobError, store::operator};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prune {
    pub older_than_days: u32,
}

impl Job for Prune {
    const QUEUE: &'static str = "maintenance.prune";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let (jobs, orphan_attempts) = operator::prune(&ctx.pool, self.older_than_days).await?;
        tracing::info!(jobs, orphan_attempts, "pruned");
        Ok(())
    }
}
