//! The job core every job kind uses: payloads, errors, retry policy, enqueue, the
//! outbound HTTP classifier, the attempt history and the apalis worker runner.

pub mod attempts;
pub mod backend;
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
pub mod wakeup;

pub use enqueue::{EnqueueError, EnqueueOptions, enqueue, enqueue_deferred};
pub use error::JobError;
pub use job::{Job, JobContext, PartnerSettings};
pub use notifier::Notifier;
pub use policy::RetryPolicy;
pub use runner::{WorkerSet, WorkerSettings};
