//! `allio.fetch`: for one integration, takes new ADD/MOD tasks (status 1 while in flight),
//! asks ALLIO for the objects (`POST {base}/{entity}/list`, up to 100 ids a request,
//! paced to the shared per-IP rate), upserts them into the CRM schema, and sets each
//! task to 2, or to 3 with the error once no retry is left. Claims are fair between
//! integrations: one integration's backlog does not hold up another's fetches.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use syncline_domain::allio::{
    crm, settings,
    tasks::{self, Kind, Task},
};
use uuid::Uuid;

use crate::core::{
    EnqueueError, EnqueueOptions, Job, JobContext, JobError, enqueue, outbound, pacing, runner,
};

/// Tasks one run takes; more waiting means the job queues its own continuation.
const TASKS_PER_RUN: i64 = 20;
/// A task held in processing this long belongs to a worker that died.
const STUCK_AFTER: Duration = Duration::from_secs(600);
/// 429s tolerated for one request before the job backs off as a whole.
const THROTTLED_TRIES: u32 = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fetch {
    pub integration_id: Uuid,
}

/// The integration's ALLIO settings; without them no ALLIO job can do anything.
pub async fn settings_of(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<settings::Settings, JobError> {
    settings::load(conn, integration_id)
        .await?
        .ok_or_else(|| JobError::permanent("the integration has no ALLIO settings"))
}

/// Queues a fetch for the integration unless one is already waiting.
pub async fn enqueue_fetch(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<(), EnqueueError> {
    let options = EnqueueOptions {
        dedupe_key: Some(integration_id.to_string()),
        ..Default::default()
    };
    enqueue(conn, &Fetch { integration_id }, options).await?;
    Ok(())
}

impl Job for Fetch {
    const QUEUE: &'static str = "allio.fetch";
    const DEDUPE_ONLY_WHILE_WAITING: bool = true;
    const FAIR: bool = true;

    fn fair_key(&self) -> Option<String> {
        Some(self.integration_id.to_string())
    }

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let mut conn = ctx.pool.acquire().await?;
        runner::record_integration(&mut conn, self.integration_id).await?;
        let settings = settings_of(&mut conn, self.integration_id).await?;
        if !settings.active {
            tracing::info!("integration inactive; tasks stay new");
            return Ok(());
        }
        tasks::release_stuck(&mut conn, self.integration_id, STUCK_AFTER).await?;
        // Claiming also takes back what an earlier attempt of this job left claimed.
        let work = tasks::claim(
            &mut conn,
            self.integration_id,
            Kind::Fetch,
            &ctx.job_id,
            TASKS_PER_RUN,
        )
        .await?;
        drop(conn);

        let fetcher = Fetcher {
            ctx: &ctx,
            settings: &settings,
        };
        for (index, task) in work.iter().enumerate() {
            if let Err(error) = fetcher.sync(task).await {
                return fetcher.give_up_or_retry(&work[index..], error).await;
            }
        }
        if work.len() as i64 >= TASKS_PER_RUN {
            // More may be waiting: run again at once, with the attempt given back.
            return Err(JobError::snooze(Duration::ZERO));
        }
        Ok(())
    }
}

struct Fetcher<'a> {
    ctx: &'a JobContext,
    settings: &'a settings::Settings,
}

impl Fetcher<'_> {
    fn bucket(&self) -> String {
        format!("allio:{}", self.ctx.partners.allio_egress)
    }

    /// Fetches one task's objects and stores them, the task's status in the same commit.
    async fn sync(&self, task: &Task) -> Result<(), JobError> {
        let objects = self.list(task).await?;
        let mut records = Vec::with_capacity(objects.len());
        for object in &objects {
            match crm::map(task.entity, object) {
                Ok(record) => records.push(record),
                Err(why) => tracing::warn!(task = task.id, %why, "ALLIO object skipped"),
            }
        }
        let mut tx = self.ctx.pool.begin().await?;
        crm::upsert(&mut tx, self.settings.integration_id, task.entity, &records).await?;
        tasks::set_status(&mut tx, &[task.id], tasks::DONE, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One paced `POST {base}/{entity}/list`; a 429 slows the shared bucket and is tried
    /// again a few times before the job backs off.
    async fn list(&self, task: &Task) -> Result<Vec<Value>, JobError> {
        let url = format!(
            "{}/{}/list",
            self.settings.api_base_url.trim_end_matches('/'),
            task.entity.as_str()
        );
        let interval = pacing::interval_for(self.ctx.partners.allio_rate_per_sec);
        let bucket = self.bucket();
        let mut throttled = 0;
        loop {
            pacing::acquire(&self.ctx.pool, &bucket, interval).await?;
            let request = self
                .ctx
                .http
                .post(&url)
                .header("x-api-key", &self.settings.api_key)
                .json(&json!({ "ids": task.ids }));
            let response = outbound::fetch(request).await?;
            if response.status.as_u16() == 429 && throttled < THROTTLED_TRIES {
                throttled += 1;
                let by = outbound::retry_after(&response.headers).unwrap_or(Duration::from_secs(1));
                pacing::slow_down(&self.ctx.pool, &bucket, by).await?;
                continue;
            }
            return parse_objects(&response.classified()?.body);
        }
    }

    /// After a failure at `remaining[0]`: a permanent error, or a retryable one with the
    /// budget spent, fails those tasks (status 3); otherwise they stay claimed by this
    /// job, whose retry takes them first.
    async fn give_up_or_retry(&self, remaining: &[Task], error: JobError) -> Result<(), JobError> {
        let last_attempt = self.ctx.attempt >= Fetch::POLICY.max_attempts;
        let ids: Vec<i64> = remaining.iter().map(|t| t.id).collect();
        let mut conn = self.ctx.pool.acquire().await?;
        if error.is_permanent() || last_attempt {
            tasks::set_status(&mut conn, &ids, tasks::ERROR, Some(&error.message)).await?;
        }
        Err(error)
    }
}

/// ALLIO answers `{"items": [...]}` (a bare array is accepted too).
fn parse_objects(body: &str) -> Result<Vec<Value>, JobError> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| JobError::permanent(format!("ALLIO answered unreadable JSON: {e}")))?;
    match value {
        Value::Array(items) => Ok(items),
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(JobError::permanent("ALLIO answer has no `items` list")),
        },
        _ => Err(JobError::permanent("ALLIO answer is not a list")),
    }
}
