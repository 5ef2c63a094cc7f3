//! Acknowledgements: finished attempts go to one task per process that writes them in
//! batches ([`store::worker::acknowledge`]: new state and history row in one statement),
//! so a job's end costs its worker no round trip, and claims and acknowledgements
//! overlap instead of taking turns.
//!
//! Nothing is dropped while the process runs: a batch the database refuses for its
//! data is written row by row (one bad row cannot hold back the others), and a lost
//! connection is retried until it comes back. Once the process is stopping, a batch
//! gets a few more tries; after that its jobs stay `running` under workers that no
//! longer heartbeat, and another process takes them back.

use std::time::Duration;

use sqlx::PgPool;
use tokio::{sync::mpsc, task::JoinHandle};

use super::store::worker::{self as store, Finished};

const BATCH: usize = 1000;
/// Results waiting to be written, per process. A worker whose result finds the queue
/// full waits, so claims slow down to the pace the database acknowledges at (without
/// this bound, a slow acknowledgement would let claims run arbitrarily far ahead).
const QUEUED_RESULTS: usize = 2 * BATCH;
/// Tries per batch once the process is stopping.
const TRIES_WHEN_STOPPING: u32 = 5;
const MAX_PAUSE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Acker {
    sender: mpsc::Sender<Finished>,
}

impl Acker {
    /// Starts the writer. It stops, after writing what it holds, once every `Acker`
    /// clone is dropped; await the handle to be sure of it.
    pub fn start(pool: PgPool) -> (Acker, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUED_RESULTS);
        (
            Acker { sender },
            tokio::spawn(write_batches(pool, receiver)),
        )
    }

    /// Queues a result, waiting while the writer is `QUEUED_RESULTS` behind.
    pub async fn send(&self, finished: Finished) {
        if self.sender.send(finished).await.is_err() {
            tracing::error!("acknowledgement writer stopped; a job result was not kept");
        }
    }
}

async fn write_batches(pool: PgPool, mut receiver: mpsc::Receiver<Finished>) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let mut tries = 0;
        loop {
            match store::acknowledge(&pool, &batch).await {
                Ok(()) => break,
                Err(e) if is_about_the_data(&e) => {
                    tracing::error!(error = %e, rows = batch.len(), "acknowledgement refused; writing row by row");
                    write_one_by_one(&pool, &batch).await;
                    break;
                }
                Err(e) => {
                    tries += 1;
                    if receiver.is_closed() && tries >= TRIES_WHEN_STOPPING {
                        tracing::error!(error = %e, lost = batch.len(), "could not acknowledge jobs before stopping; other workers will take them back");
                        break;
                    }
                    tracing::warn!(error = %e, tries, "acknowledgement failed; retrying");
                    tokio::time::sleep((Duration::from_millis(100) * tries).min(MAX_PAUSE)).await;
                }
            }
        }
        let due_now: Vec<String> = batch
            .iter()
            .filter(|f| f.run_in == Some(Duration::ZERO))
            .map(|f| f.queue.to_owned())
            .collect();
        if let Err(e) = store::wake(&pool, &due_now).await {
            tracing::warn!(error = %e, "wake-up for jobs due again not sent; workers will poll");
        }
        batch.clear();
    }
}

/// Data exceptions and constraint violations (SQLSTATE classes 22 and 23): retrying
/// the same rows cannot help.
fn is_about_the_data(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")))
}

/// The rows of a refused batch one at a time; a row refused on its own is written once
/// more without its error text, which is the only free-form part.
async fn write_one_by_one(pool: &PgPool, batch: &[Finished]) {
    for finished in batch {
        let row = std::slice::from_ref(finished);
        let Err(e) = store::acknowledge(pool, row).await else {
            continue;
        };
        let plain = Finished {
            error: Some(format!("the attempt's error could not be stored: {e}")),
            ..finished.clone()
        };
        if let Err(e) = store::acknowledge(pool, std::slice::from_ref(&plain)).await {
            tracing::error!(job_id = %finished.job_id, error = %e, "could not acknowledge job");
        }
    }
}
