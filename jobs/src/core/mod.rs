//! The job core every job kind uses: payloads, errors, retry policy, enqueue, the
//! outbound HTTP classifier, the job store (every statement on job rows) and the apalis
//! worker runner.

pub mod acker;
pub mod backend;
pub mod delay;
pub mod enqueue;
pub mod error;
pub mod job;
pub mod metrics;
pub mod notifier;
pub mod outbound;
pub mod pacing;
pub mod policy;
pub mod runner;
pub mod schedule;
pub mod store;
pub mod wakeup;

pub use enqueue::{EnqueueError, EnqueueOptions, enqueue, enqueue_deferred};
pub use error::JobError;
pub use job::{Job, JobContext, PartnerSettings};
pub use notifier::Notifier;
pub use policy::RetryPolicy;
pub use runner::{WorkerSet, WorkerSettings};
pub use store::JobState;
