//! One LISTEN connection per worker process, fanning apalis's insert notifications out
//! to the worker of each queue. (apalis's own `Pubsub` holds a pooled connection per
//! queue for good, which exhausts small pools as queues are added.)

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, channel::mpsc};
use serde::Deserialize;
use sqlx::{PgPool, postgres::PgListener};

/// The channel apalis's insert trigger notifies.
pub(super) const CHANNEL: &str = "apalis::job::insert";

type Subscribers = Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<()>>>>>;

#[derive(Clone, Default)]
pub struct Wakeups {
    subscribers: Subscribers,
}

/// A stream that yields each time a job is inserted into one queue.
pub struct QueueWakeups(Mutex<mpsc::UnboundedReceiver<()>>);

impl Stream for QueueWakeups {
    type Item = ();

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        match self.0.lock() {
            Ok(mut receiver) => Pin::new(&mut *receiver).poll_next(cx),
            Err(_) => Poll::Ready(None),
        }
    }
}

#[derive(Deserialize)]
struct Inserted {
    job_type: String,
}

impl Wakeups {
    pub fn subscribe(&self, queue: &str) -> QueueWakeups {
        let (sender, receiver) = mpsc::unbounded();
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers
                .entry(queue.to_owned())
                .or_default()
                .push(sender);
        }
        QueueWakeups(Mutex::new(receiver))
    }

    fn wake(&self, queue: Option<&str>) {
        let Ok(mut subscribers) = self.subscribers.lock() else {
            return;
        };
        for (name, senders) in subscribers.iter_mut() {
            if queue.is_none_or(|q| q == name) {
                senders.retain(|s| s.unbounded_send(()).is_ok());
            }
        }
    }

    /// Listens until the task is aborted, reconnecting after errors; after a reconnect
    /// every queue is woken, since notifications sent meanwhile were lost.
    pub async fn listen(self, pool: PgPool) {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN failed");
                    } else {
                        self.wake(None);
                        while let Ok(notification) = listener.recv().await {
                            if let Ok(inserted) =
                                serde_json::from_str::<Inserted>(notification.payload())
                            {
                                self.wake(Some(&inserted.job_type));
                            }
                        }
                        tracing::warn!("job notifications interrupted; reconnecting");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for job notifications"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
