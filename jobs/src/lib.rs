//! syncline's jobs: the job core and one module per job kind.

pub mod core;
pub mod noop;
pub mod ping;
pub mod prune;

pub use core::{WorkerSet, WorkerSettings};

use std::time::Duration;

use core::schedule::Schedule;

/// Every job kind this release knows, and every periodic job, wired into a worker set.
pub fn register_all(set: WorkerSet) -> WorkerSet {
    let retention = prune::Prune {
        older_than_days: set.settings.retention_days,
    };
    set.add::<noop::Noop>()
        .add::<ping::Ping>()
        .add::<prune::Prune>()
        .schedule(Schedule::new("prune", Duration::from_secs(3600), retention))
}
