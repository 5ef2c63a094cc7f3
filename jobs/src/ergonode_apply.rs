//! `ergonode.apply`: applies one Ergonode resource event to our catalog (upsert for
//! created/updated, delete for deleted), recorded under its synchronization id.
//! Redelivered events change nothing the second time.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use syncline_domain::catalog::{self, Effect, Kind, Resource};
use uuid::Uuid;

use crate::core::{Job, JobContext, JobError, runner};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Apply {
    pub integration_id: Uuid,
    pub synchronization_id: Uuid,
    /// `attribute`, `category` or `product`.
    pub kind: String,
    pub resource_id: String,
    pub resource_type: String,
    #[serde(default)]
    pub events: Value,
    pub deleted: bool,
    /// Arrival order (see `catalog::accept_event`): an older event never undoes a newer one.
    pub seq: i64,
}

impl Job for Apply {
    const QUEUE: &'static str = "ergonode.apply";
    /// A full synchronization of one integration (thousands of events) must not hold up
    /// another integration's updates.
    const FAIR: bool = true;

    fn fair_key(&self) -> Option<String> {
        Some(self.integration_id.to_string())
    }

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let kind = Kind::parse(&self.kind)
            .ok_or_else(|| JobError::permanent(format!("unknown kind `{}`", self.kind)))?;
        let effect = if self.deleted {
            Effect::Delete {
                kind,
                resource_id: self.resource_id.clone(),
            }
        } else {
            Effect::Upsert(Resource {
                kind,
                resource_id: self.resource_id.clone(),
                resource_type: self.resource_type.clone(),
                events: self.events.clone(),
                synchronization_id: self.synchronization_id,
            })
        };
        let mut tx = ctx.pool.begin().await?;
        runner::record_integration(&mut tx, self.integration_id).await?;
        let changed = catalog::apply(&mut tx, self.integration_id, self.seq, &effect).await?;
        tx.commit().await?;
        tracing::info!(
            kind = self.kind,
            resource_id = self.resource_id,
            changed,
            "Ergonode event applied"
        );
        Ok(())
    }
}
