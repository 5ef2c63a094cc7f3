//! Wake-ups sent after commit, batched per process.
//!
//! The jobs table's insert trigger notifies inside the inserting transaction, and Postgres holds
//! a cluster-wide lock on its notification queue from a notifying transaction's
//! pre-commit until its commit record is flushed: under a stream of requests, each
//! commit waits for the previous one's fsync. Intake routes therefore enqueue with the
//! trigger switched off for their transaction ([`super::enqueue::enqueue_deferred`]) and
//! hand the queue to this process's [`Notifier`] once committed. It sends one
//! notification per queue for everything handed over meanwhile, in one statement that
//! writes nothing.

use std::collections::BTreeSet;

use futures::{StreamExt, channel::mpsc};
use sqlx::PgPool;

use super::store::worker::wake;

#[derive(Clone)]
pub struct Notifier {
    queues: mpsc::UnboundedSender<&'static str>,
}

/// A job enqueued without the trigger's wake-up: send it once the transaction commits
/// (before would wake workers that cannot see the job yet).
#[must_use = "send the wake-up once the transaction has committed"]
pub struct PendingWakeup(pub(super) &'static str);

impl PendingWakeup {
    pub fn send(self, notifier: &Notifier) {
        // The receiver lives as long as the runtime; a lost wake-up only delays the job
        // until the workers' next poll.
        let _ = notifier.queues.unbounded_send(self.0);
    }
}

impl Notifier {
    /// Starts this process's notifier task on the current runtime.
    pub fn start(pool: PgPool) -> Self {
        let (queues, pending) = mpsc::unbounded();
        tokio::spawn(notify_batches(pool, pending));
        Self { queues }
    }
}

async fn notify_batches(pool: PgPool, mut pending: mpsc::UnboundedReceiver<&'static str>) {
    while let Some(first) = pending.next().await {
        let mut queues = BTreeSet::from([first.to_owned()]);
        while let Ok(queue) = pending.try_recv() {
            queues.insert(queue.to_owned());
        }
        let queues: Vec<String> = queues.into_iter().collect();
        if let Err(e) = wake(&pool, &queues).await {
            tracing::warn!(error = %e, ?queues, "wake-up not sent; workers will poll");
        }
    }
}
