//! syncline's jobs: the job core and one module per job kind.

pub mod core;
pub mod noop;
pub mod ping;

pub use core::{WorkerSet, WorkerSettings};

/// Every job kind this release knows, wired into a worker set.
pub fn register_all(set: WorkerSet) -> WorkerSet {
    set.add::<noop::Noop>().add::<ping::Ping>()
}
