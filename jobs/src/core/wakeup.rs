//! What wakes workers: one LISTEN connection per worker process, fanning insert
//! notifications out to the worker of each queue ([`Wakeups`]; apalis's own `Pubsub`
//! holds a pooled connection per queue for good, which exhausts small pools as queues
//! are added), and each worker's poll strategy ([`QueueWake`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};
use futures::{StreamExt, channel::mpsc};
use sqlx::{PgPool, postgres::PgListener};
use tokio::time::{Interval, MissedTickBehavior};

use super::store::WAKE_CHANNEL;

type Subscribers = Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<()>>>>>;

#[derive(Clone, Default)]
pub struct Wakeups {
    subscribers: Subscribers,
}

/// What wakes one queue's worker to claim jobs: a notification for its queue, or its
/// poll interval coming round (for retries coming due).
///
/// apalis-core's stock `Strategy` stops at the first source that is ready, so after a
/// notification its timer goes unpolled, and `PollWith` ignores what the strategy says:
/// a wake-up consumed while a claim is already in flight is simply gone, and that claim
/// may have run before the job committed. Here every poll drains the notifications and
/// re-arms the timer, and a wake-up raises the queue's [`WakeFlag`], which the backend
/// checks after an empty claim to claim once more (see `backend::QueueStore`).
pub struct QueueWake {
    notifications: Mutex<mpsc::UnboundedReceiver<()>>,
    tick: Mutex<Interval>,
    flag: WakeFlag,
}

impl PollStrategy for QueueWake {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut woken = false;
        if let Ok(notifications) = self.notifications.get_mut() {
            while let Poll::Ready(Some(())) = notifications.poll_next_unpin(cx) {
                woken = true;
            }
        }
        if let Ok(tick) = self.tick.get_mut() {
            while tick.poll_tick(cx).is_ready() {
                woken = true;
            }
        }
        if woken {
            self.flag.raise();
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

/// Set when a queue's worker is woken; taken by its backend after an empty claim.
#[derive(Debug, Clone, Default)]
pub struct WakeFlag(Arc<AtomicBool>);

impl WakeFlag {
    fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Clears the flag, saying whether it was set.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

impl Wakeups {
    /// What wakes a worker of `queue`, polling every `poll_interval` besides; `flag` is
    /// the one its backend reads.
    pub fn subscribe(&self, queue: &str, poll_interval: Duration, flag: WakeFlag) -> QueueWake {
        let (sender, receiver) = mpsc::unbounded();
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers
                .entry(queue.to_owned())
                .or_default()
                .push(sender);
        }
        let mut tick = tokio::time::interval(poll_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        QueueWake {
            notifications: Mutex::new(receiver),
            tick: Mutex::new(tick),
            flag,
        }
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
                    if let Err(e) = listener.listen(WAKE_CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN failed");
                    } else {
                        self.wake(None);
                        // The payload is the queue's name.
                        while let Ok(notification) = listener.recv().await {
                            self.wake(Some(notification.payload()));
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::task::{ArcWake, waker};

    use super::*;

    /// Counts how often the task it stands for was woken.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl ArcWake for CountingWaker {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn every_poll_drains_the_notifications_and_keeps_the_timer_armed() {
        let wakeups = Wakeups::default();
        let flag = WakeFlag::default();
        let mut wake = wakeups.subscribe("q", Duration::from_millis(200), flag.clone());
        let counter = Arc::new(CountingWaker::default());
        let task = waker(counter.clone());
        let mut cx = Context::from_waker(&task);
        let snapshot = PollSnapshot::default();

        // The first tick is due at once (once the timer has seen it pass).
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(wake.poll_drive(&mut cx, &snapshot).is_ready());
        assert!(flag.take());
        assert!(!flag.take(), "taking the flag clears it");

        // Two notifications for this queue (one for another) are answered by one poll.
        wakeups.wake(Some("q"));
        wakeups.wake(Some("q"));
        wakeups.wake(Some("other"));
        assert!(wake.poll_drive(&mut cx, &snapshot).is_ready());
        assert!(flag.take());

        // Polls that found a wake-up still armed the timer: the task is woken when the
        // interval comes round, with no poll in between.
        let woken_before = counter.0.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(counter.0.load(Ordering::SeqCst) > woken_before);
        assert!(wake.poll_drive(&mut cx, &snapshot).is_ready());
        // Nothing was left behind: no notification waits for a poll of its own.
        assert!(wake.poll_drive(&mut cx, &snapshot).is_pending());
    }
}
