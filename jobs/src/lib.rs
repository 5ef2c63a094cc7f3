//! syncline's jobs: the job core and one module per job kind.

pub mod allio_delete_sweep;
pub mod allio_fetch;
pub mod allio_ingest;
pub mod core;
pub mod ergonode_apply;
pub mod noop;
pub mod ping;
pub mod prune;
pub mod reconcile;
pub mod reconcile_sweep;
pub mod webhook_deliver;

pub use core::{WorkerSet, WorkerSettings};

use std::time::Duration;

use core::schedule::Schedule;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// Installs what the database needs from this release's Rust constants: the
/// change-log trigger's function, which enqueues webhook deliveries.
pub async fn install(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    use core::{Job, store::queue};
    use webhook_deliver::Deliver;
    let delivery = queue::ChangeLogDelivery {
        queue: Deliver::QUEUE,
        version: Deliver::VERSION,
        max_attempts: Deliver::POLICY.max_attempts,
    };
    queue::install_change_log_trigger(pool, &delivery).await
}

/// Every job kind this release knows, and every periodic job, wired into a worker set.
pub fn register_all(set: WorkerSet) -> WorkerSet {
    let sweep_at = set.settings.allio_sweep_at;
    let retention = prune::Prune {
        older_than_days: set.settings.retention_days,
    };
    set.add::<noop::Noop>()
        .add::<ping::Ping>()
        .add::<prune::Prune>()
        .add::<reconcile::Reconcile>()
        .add::<reconcile_sweep::ReconcileSweep>()
        .add::<allio_ingest::Ingest>()
        .add::<allio_fetch::Fetch>()
        .add::<allio_delete_sweep::DeleteSweep>()
        .add::<allio_delete_sweep::DeleteSweepAll>()
        .add::<ergonode_apply::Apply>()
        .add::<webhook_deliver::Deliver>()
        .schedule(Schedule::new("prune", HOUR, retention))
        .schedule(Schedule::new(
            "favourites.reconcile_sweep",
            HOUR,
            reconcile_sweep::ReconcileSweep::default(),
        ))
        .schedule(
            Schedule::new(
                "allio.delete_sweep_all",
                DAY,
                allio_delete_sweep::DeleteSweepAll::default(),
            )
            .offset_by(sweep_at),
        )
}
