//! `demo.ping`: POSTs to a URL and lets the outbound classifier judge the answer.
//! Operators use it to check that workers reach a peer; tests use it to drive every
//! retry path through a real HTTP server.

use serde::{Deserialize, Serialize};

use crate::core::{Job, JobContext, JobError, outbound};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ping {
    pub url: String,
}

impl Job for Ping {
    const QUEUE: &'static str = "demo.ping";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let request = ctx
            .http
            .post(&self.url)
            .header("x-syncline-job-id", &ctx.job_id)
            .header("x-syncline-attempt", ctx.attempt.to_string())
            .body("ping");
        outbound::send(request).await.map(|_| ())
    }
}
