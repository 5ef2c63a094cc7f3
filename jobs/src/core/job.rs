//! What a job kind is: a versioned serde payload with an explicit queue name,
//! a retry policy and a handler.

use std::future::Future;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sqlx::PgPool;

use super::{error::JobError, policy::RetryPolicy};

/// A job kind. Queue names are explicit strings so renaming a Rust type never orphans
/// queued jobs. Payload fields added later must carry `#[serde(default)]`; a change
/// that cannot be defaulted bumps `VERSION`.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    const QUEUE: &'static str;
    const VERSION: u16 = 1;
    const POLICY: RetryPolicy = RetryPolicy::STANDARD;
    /// When true, the job's de-duplication key is released as it starts, so a later
    /// enqueue with the same key makes a new job: de-duplication holds only while the
    /// job waits (for jobs whose run may already have read stale state).
    const DEDUPE_ONLY_WHILE_WAITING: bool = false;
    /// When true, claims share the queue round robin between [`Job::fair_key`]s (a
    /// tenant, an integration), so one key's backlog cannot starve the others.
    const FAIR: bool = false;

    /// Whose job this is, for fair claiming (used when [`Job::FAIR`] is set).
    fn fair_key(&self) -> Option<String> {
        None
    }

    fn run(self, ctx: JobContext) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// What a running job can use.
#[derive(Clone)]
pub struct JobContext {
    pub pool: PgPool,
    pub http: reqwest::Client,
    pub job_id: String,
    pub attempt: u32,
    pub partners: PartnerSettings,
}

/// Settings of partner calls that job kinds share.
#[derive(Debug, Clone)]
pub struct PartnerSettings {
    /// Requests per second allowed to ALLIO per egress IP, over all processes.
    pub allio_rate_per_sec: f64,
    /// Name of this deployment's egress IP towards ALLIO (processes sharing an IP must
    /// share the name).
    pub allio_egress: String,
}

impl Default for PartnerSettings {
    fn default() -> Self {
        Self {
            allio_rate_per_sec: 2.0,
            allio_egress: "default".into(),
        }
    }
}

/// The stored form of a payload: `{"v": <version>, "payload": {...}}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u16,
    pub payload: T,
}

impl<J: Job> Envelope<J> {
    pub fn encode(job: &J) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&Envelope {
            v: J::VERSION,
            payload: job,
        })
    }

    /// Reads a stored payload. A payload from a newer release is retryable (a newer
    /// worker may be rolling out); one that does not parse is permanent.
    pub fn decode(value: serde_json::Value) -> Result<J, JobError> {
        let version = value.get("v").and_then(|v| v.as_u64()).unwrap_or(0);
        if version > u64::from(J::VERSION) {
            return Err(JobError::retryable(format!(
                "payload version {version} is newer than this worker's {} for {}",
                J::VERSION,
                J::QUEUE
            )));
        }
        serde_json::from_value::<Envelope<J>>(value)
            .map(|e| e.payload)
            .map_err(|e| JobError::permanent(format!("undecodable {} payload: {e}", J::QUEUE)))
    }
}
