//! `allio.ingest`: a stored ALLIO webhook → sync tasks; the webhook is marked processed
//! and, when tasks need fetching, `allio.fetch` is queued for the integration. Running
//! it twice creates nothing the second time.

use serde::{Deserialize, Serialize};
use syncline_domain::allio::intake;

use crate::{
    allio_fetch,
    core::{Job, JobContext, JobError, runner},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ingest {
    pub webhook_id: i64,
}

impl Job for Ingest {
    const QUEUE: &'static str = "allio.ingest";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let mut tx = ctx.pool.begin().await?;
        let ingested = intake::ingest(&mut tx, self.webhook_id)
            .await?
            .ok_or_else(|| JobError::permanent(format!("no ALLIO webhook {}", self.webhook_id)))?;
        runner::record_integration(&mut tx, ingested.integration_id).await?;
        if ingested.needs_fetch {
            allio_fetch::enqueue_fetch(&mut tx, ingested.integration_id).await?;
        }
        tx.commit().await?;
        tracing::info!(
            webhook_id = self.webhook_id,
            tasks = ingested.tasks,
            "ALLIO webhook ingested"
        );
        Ok(())
    }
}
