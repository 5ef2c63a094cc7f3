//! `allio.delete_sweep`: for one integration with the delete control on, takes the new
//! `*_DEL` tasks, deletes those reservations/deals by external id and sets the tasks to 2.
//! `allio.delete_sweep_all` (daily) queues one per integration, keyed by integration and
//! date, so each integration is swept once a day however many workers run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use syncline_domain::allio::{
    Entity, crm, settings,
    tasks::{self, Kind},
};
use uuid::Uuid;

use crate::{
    allio_fetch,
    core::{EnqueueError, EnqueueOptions, Job, JobContext, JobError, enqueue, runner},
};

/// Tasks one sweep takes per round trip.
const TASKS_PER_ROUND: i64 = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteSweep {
    pub integration_id: Uuid,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeleteSweepAll {}

/// Queues a sweep of one integration; `day` (e.g. `2026-11-23`) makes it the sweep of
/// that day, queued once however often this is called; `None` queues one regardless.
pub async fn enqueue_sweep(
    conn: &mut PgConnection,
    integration_id: Uuid,
    day: Option<&str>,
) -> Result<Option<String>, EnqueueError> {
    let options = EnqueueOptions {
        dedupe_key: day.map(|d| format!("{integration_id}@{d}")),
        ..Default::default()
    };
    enqueue(conn, &DeleteSweep { integration_id }, options).await
}

impl Job for DeleteSweepAll {
    const QUEUE: &'static str = "allio.delete_sweep_all";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let day = chrono::Utc::now().date_naive().to_string();
        let mut tx = ctx.pool.begin().await?;
        for integration_id in settings::with_delete_sync(&mut tx).await? {
            enqueue_sweep(&mut tx, integration_id, Some(&day)).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Job for DeleteSweep {
    const QUEUE: &'static str = "allio.delete_sweep";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let mut conn = ctx.pool.acquire().await?;
        runner::record_integration(&mut conn, self.integration_id).await?;
        let settings = allio_fetch::settings_of(&mut conn, self.integration_id).await?;
        if !settings.delete_sync {
            tracing::info!("delete control is off; nothing swept");
            return Ok(());
        }
        drop(conn);
        let mut deleted = 0;
        loop {
            let mut tx = ctx.pool.begin().await?;
            let batch = tasks::claim(
                &mut tx,
                self.integration_id,
                Kind::Delete,
                &ctx.job_id,
                TASKS_PER_ROUND,
            )
            .await?;
            if batch.is_empty() {
                break;
            }
            let mut by_entity: BTreeMap<&str, (Entity, Vec<String>)> = BTreeMap::new();
            for task in &batch {
                let entry = by_entity
                    .entry(task.entity.as_str())
                    .or_insert((task.entity, Vec::new()));
                entry.1.extend(task.ids.iter().map(i64::to_string));
            }
            for (entity, ids) in by_entity.into_values() {
                deleted += crm::delete(&mut tx, self.integration_id, entity, &ids).await?;
            }
            let ids: Vec<i64> = batch.iter().map(|t| t.id).collect();
            tasks::set_status(&mut tx, &ids, tasks::DONE, None).await?;
            tx.commit().await?;
        }
        tracing::info!(deleted, "ALLIO delete sweep done");
        Ok(())
    }
}
