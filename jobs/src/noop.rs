//! `demo.noop`: does nothing. The yardstick for the job engine's own overhead.

use serde::{Deserialize, Serialize};

use crate::core::{Job, JobContext, JobError};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Noop {
    /// Free text for whoever enqueued it (e.g. a benchmark run id).
    #[serde(default)]
    pub label: String,
}

impl Job for Noop {
    const QUEUE: &'static str = "demo.noop";

    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}
