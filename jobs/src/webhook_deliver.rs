//! `webhook.deliver`: sends one webhook its pending changes, in order, in batches of at
//! most 1000: `{"id", "changes": [{"time", "change_type", "entity", "latest", "changed"}]}`,
//! signed Standard Webhooks style. Success is HTTP 200 with body `ok`; anything else sets
//! the webhook to `retry` and the job retries on the protocol's schedule (30 s … 8 h,
//! under 24 h in total), then `stop`. A lease on the webhook keeps deliveries one at a
//! time; a slow endpoint holds only its own webhook.

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use syncline_domain::{
    feed::{self, Sort},
    webhooks::{self, Attempt, Lease, Target},
};

use crate::core::{
    EnqueueError, EnqueueOptions, Job, JobContext, JobError, RetryPolicy, enqueue, runner,
};

/// Most changes in one delivery.
pub const BATCH: i64 = 1000;
/// Characters of a receiver's answer kept with an attempt.
const BODY_EXCERPT: usize = 256;
/// How long one delivery may hold its webhook (covers the HTTP timeout).
const LEASE_SECS: i64 = 120;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deliver {
    pub webhook_id: i64,
}

impl Job for Deliver {
    const QUEUE: &'static str = "webhook.deliver";
    const DEDUPE_ONLY_WHILE_WAITING: bool = true;
    /// One slow or failing receiver's backlog must not hold up other webhooks.
    const FAIR: bool = true;

    fn fair_key(&self) -> Option<String> {
        Some(self.webhook_id.to_string())
    }
    /// PROTOCOLS.md §3: 30s, 1m, 2m, 4m, 8m, 15m, 30m, 1h, 2h, 4h, 8h, then stop.
    /// (The change-log trigger is written from these constants: see `crate::install`.)
    const POLICY: RetryPolicy = RetryPolicy {
        delays: &[
            secs(30),
            secs(60),
            secs(120),
            secs(240),
            secs(480),
            secs(900),
            secs(1800),
            secs(3600),
            secs(7200),
            secs(14_400),
            secs(28_800),
        ],
        max_attempts: 12,
    };

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let mut conn = ctx.pool.acquire().await?;
        let target = match webhooks::lease(&mut conn, self.webhook_id, LEASE_SECS).await? {
            Lease::Held(target) => {
                runner::record_tenant(target.tenant);
                target
            }
            Lease::Inactive => return Ok(()),
            Lease::Busy => {
                // Another delivery is in flight: come back when it is likely done.
                return Err(JobError::snooze(Duration::from_secs(1)));
            }
        };
        let (changes, up_to) = feed::page(
            &mut conn,
            target.tenant,
            &target.entities,
            Sort::UpdatedAt,
            target.position,
            BATCH,
        )
        .await?;
        if changes.is_empty() {
            webhooks::release(&mut conn, self.webhook_id).await?;
            // Changes may wait behind an older transaction still running (the page only
            // shows finished ones): look again soon rather than leave them stranded.
            if feed::any_after(&mut conn, target.tenant, &target.entities, target.position).await? {
                return Err(JobError::snooze(Duration::from_millis(200)));
            }
            return Ok(());
        }
        drop(conn);
        let count = changes.len();
        let body = json!({
            "id": format!("{}_{}_{}", self.webhook_id, up_to.txid, up_to.id),
            "changes": changes.into_iter().map(|c| json!({
                "time": c.changed_at,
                "change_type": c.change_type,
                "entity": c.entity,
                "latest": with_id(c.latest, &c.entity_id),
                "changed": c.changed,
            })).collect::<Vec<_>>(),
        });
        let outcome = post(&ctx, &target, &body).await;
        let mut conn = ctx.pool.acquire().await?;
        let attempt = Attempt {
            sent_at: outcome.sent_at,
            duration_ms: outcome.duration.as_millis().min(i32::MAX as u128) as i32,
            changes: count as i32,
            resp_status: outcome.status.map(i32::from),
            resp_body: outcome.body.clone(),
            error: outcome.error.clone(),
        };
        match outcome.error {
            None => {
                webhooks::delivered(&mut conn, self.webhook_id, up_to, &attempt).await?;
                if count as i64 == BATCH {
                    // A full batch: more changes may wait; send them next.
                    return Err(JobError::snooze(Duration::ZERO));
                }
                Ok(())
            }
            Some(error) => {
                let last = ctx.attempt >= Self::POLICY.max_attempts;
                webhooks::failed(&mut conn, self.webhook_id, &attempt, ctx.attempt, last).await?;
                Err(JobError::retryable(error))
            }
        }
    }
}

/// What resuming a webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    NoSuchWebhook,
    /// State back to `ok`; the queued delivery (none if one was already waiting).
    Queued(Option<String>),
}

/// Puts a stopped (or retrying) webhook back to `ok` and queues a delivery.
pub async fn resume(
    conn: &mut sqlx::PgConnection,
    webhook_id: i64,
) -> Result<Resumed, EnqueueError> {
    if !webhooks::resume(conn, webhook_id).await? {
        return Ok(Resumed::NoSuchWebhook);
    }
    let options = EnqueueOptions {
        dedupe_key: Some(webhook_id.to_string()),
        ..Default::default()
    };
    Ok(Resumed::Queued(
        enqueue(conn, &Deliver { webhook_id }, options).await?,
    ))
}

fn with_id(latest: Value, entity_id: &str) -> Value {
    match latest {
        Value::Object(mut map) => {
            map.entry("id")
                .or_insert_with(|| Value::String(entity_id.to_owned()));
            Value::Object(map)
        }
        other => other,
    }
}

struct Outcome {
    sent_at: chrono::DateTime<Utc>,
    duration: Duration,
    status: Option<u16>,
    body: Option<String>,
    /// `None` only for HTTP 200 with body `ok`.
    error: Option<String>,
}

/// The Standard Webhooks signature of `body` sent as message `id` at `timestamp`.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

async fn post(ctx: &JobContext, target: &Target, body: &Value) -> Outcome {
    let text = body.to_string();
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    let sent_at = Utc::now();
    let timestamp = sent_at.timestamp();
    let started = Instant::now();
    let request = ctx
        .http
        .post(&target.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            signature(&target.secret, &id, timestamp, &text),
        )
        .body(text);
    let (status, answer, error) = match request.send().await {
        Err(e) => (None, None, Some(format!("request failed: {e}"))),
        Ok(response) => {
            let status = response.status().as_u16();
            let answer = response.text().await.unwrap_or_default();
            let excerpt: String = answer.chars().take(BODY_EXCERPT).collect();
            let error = (status != 200 || answer.trim() != "ok")
                .then(|| format!("unexpected status: {status}"));
            (Some(status), Some(excerpt), error)
        }
    };
    Outcome {
        sent_at,
        duration: started.elapsed(),
        status,
        body: answer,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_stays_under_a_day() {
        let total: Duration = Deliver::POLICY.delays.iter().sum();
        assert!(total < Duration::from_secs(24 * 3600), "{total:?}");
        assert_eq!(
            Deliver::POLICY.max_attempts as usize,
            Deliver::POLICY.delays.len() + 1
        );
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // Example from the Standard Webhooks specification's test vectors.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = signature(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
