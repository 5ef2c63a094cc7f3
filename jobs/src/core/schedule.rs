//! Periodic jobs. Time is cut into slots of `every`; each slot's job is enqueued with the
//! de-duplication key `<schedule>@<slot>`, so however many worker processes run the
//! scheduler, each slot yields exactly one job.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{PgConnection, PgPool};

use super::{
    enqueue::{EnqueueError, EnqueueOptions, enqueue},
    job::Job,
};

type EnqueueFn = Arc<
    dyn for<'c> Fn(
            &'c mut PgConnection,
            EnqueueOptions,
        ) -> Pin<
            Box<dyn Future<Output = Result<Option<String>, EnqueueError>> + Send + 'c>,
        > + Send
        + Sync,
>;

#[derive(Clone)]
pub struct Schedule {
    pub name: &'static str,
    pub every: Duration,
    /// Slots start this long after the epoch-aligned boundary (e.g. 03:00 for daily).
    pub offset: Duration,
    enqueue: EnqueueFn,
}

impl Schedule {
    /// Runs `job` once per `every` (slots aligned to the Unix epoch).
    pub fn new<J: Job + Clone>(name: &'static str, every: Duration, job: J) -> Self {
        assert!(
            every.as_secs() > 0,
            "a schedule's period is at least a second"
        );
        let enqueue: EnqueueFn = Arc::new(move |conn, options| {
            let job = job.clone();
            Box::pin(async move { enqueue(conn, &job, options).await })
        });
        Self {
            name,
            every,
            offset: Duration::ZERO,
            enqueue,
        }
    }

    /// Shifts the slots: `every` 24 h with `offset` 3 h runs daily at 03:00 UTC.
    pub fn offset_by(mut self, offset: Duration) -> Self {
        self.offset = offset;
        self
    }

    /// The slot `at` falls in, and when that slot starts.
    pub fn slot(&self, at: DateTime<Utc>) -> (i64, DateTime<Utc>) {
        let every = self.every.as_secs() as i64;
        let offset = self.offset.as_secs() as i64;
        let slot = (at.timestamp() - offset).div_euclid(every);
        let start = Utc
            .timestamp_opt(slot * every + offset, 0)
            .single()
            .unwrap_or(at);
        (slot, start)
    }
}

/// Enqueues each schedule's job for the current slot, checking every `tick`, until
/// `stop` resolves.
pub async fn run(
    pool: PgPool,
    schedules: Vec<Schedule>,
    tick: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut done: Vec<Option<i64>> = vec![None; schedules.len()];
    let ticking = async {
        loop {
            for (schedule, last) in schedules.iter().zip(done.iter_mut()) {
                let (slot, start) = schedule.slot(Utc::now());
                if *last == Some(slot) {
                    continue;
                }
                match enqueue_slot(&pool, schedule, slot, start).await {
                    Ok(()) => *last = Some(slot),
                    Err(e) => {
                        tracing::warn!(schedule = schedule.name, error = %e, "could not enqueue scheduled job")
                    }
                }
            }
            tokio::time::sleep(tick).await;
        }
    };
    tokio::select! {
        _ = ticking => {}
        _ = stop => {}
    }
}

async fn enqueue_slot(
    pool: &PgPool,
    schedule: &Schedule,
    slot: i64,
    start: DateTime<Utc>,
) -> Result<(), EnqueueError> {
    let mut conn = pool.acquire().await?;
    let options = EnqueueOptions {
        run_at: Some(start),
        dedupe_key: Some(format!("{}@{slot}", schedule.name)),
    };
    if let Some(id) = (schedule.enqueue)(&mut conn, options).await? {
        tracing::info!(schedule = schedule.name, job_id = %id, "scheduled job enqueued");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noop::Noop;

    #[test]
    fn slots_are_aligned_to_the_period() {
        let s = Schedule::new("t", Duration::from_secs(3600), Noop::default());
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 10, 59, 59).unwrap();
        let (slot, start) = s.slot(at);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap());
        let (next, _) = s.slot(at + chrono::Duration::seconds(1));
        assert_eq!(next, slot + 1);
    }

    #[test]
    fn offset_moves_daily_slots_to_the_chosen_time() {
        let s = Schedule::new("t", Duration::from_secs(86_400), Noop::default())
            .offset_by(Duration::from_secs(3 * 3600));
        let before = Utc.with_ymd_and_hms(2026, 11, 23, 2, 59, 59).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 11, 23, 3, 0, 0).unwrap();
        assert_eq!(
            s.slot(before).1,
            Utc.with_ymd_and_hms(2026, 11, 22, 3, 0, 0).unwrap()
        );
        assert_eq!(s.slot(after).1, after);
        assert_eq!(s.slot(after).0, s.slot(before).0 + 1);
    }
}
