//! `favourites.reconcile_sweep`: the periodic safety net. Enqueues a reconcile for every
//! user linked to a remote source, so changes made on the remote side alone are pulled.

use serde::{Deserialize, Serialize};
use syncline_domain::favourites::sources;

use crate::{
    core::{Job, JobContext, JobError},
    reconcile,
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconcileSweep {}

impl Job for ReconcileSweep {
    const QUEUE: &'static str = "favourites.reconcile_sweep";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let mut tx = ctx.pool.begin().await?;
        let links = sources::all_links(&mut tx).await?;
        for (source_id, user_id) in &links {
            reconcile::enqueue_one(&mut tx, *source_id, user_id).await?;
        }
        tx.commit().await?;
        tracing::info!(links = links.len(), "reconciles enqueued");
        Ok(())
    }
}
