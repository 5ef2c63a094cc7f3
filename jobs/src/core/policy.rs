//! Retry policies: a table of delays and an attempt budget, per job kind.
//!
//! The delay chosen here is written to the job row as its next run time, so a retry
//! survives a restart of every worker.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the 1st, 2nd, ... failed attempt; the last entry repeats.
    pub delays: &'static [Duration],
    /// Attempts in total, the first one included.
    pub max_attempts: u32,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl RetryPolicy {
    /// The default for jobs that call partners: 5s, 30s, 2m, 10m, 1h, then hourly; 10 attempts.
    pub const STANDARD: RetryPolicy = RetryPolicy {
        delays: &[secs(5), secs(30), secs(120), secs(600), secs(3600)],
        max_attempts: 10,
    };

    /// What to do after `attempt` (1-based) failed with a retryable error:
    /// `None` when the budget is spent, else the delay before the next attempt.
    /// A peer's `retry_after` is honoured when it asks for longer than the table.
    pub fn next_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let index = (attempt.max(1) as usize - 1).min(self.delays.len().saturating_sub(1));
        let table = self.delays.get(index).copied().unwrap_or_default();
        Some(retry_after.map_or(table, |asked| asked.max(table)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn standard_table_is_followed_then_last_delay_repeats() {
        let p = RetryPolicy::STANDARD;
        let got: Vec<_> = (1..=7).map(|a| p.next_delay(a, None).unwrap()).collect();
        let want = [5, 30, 120, 600, 3600, 3600, 3600].map(secs);
        assert_eq!(got, want);
    }

    #[test]
    fn budget_spent_at_max_attempts() {
        const ONE_SECOND: &[Duration] = &[secs(1)];
        let p = RetryPolicy {
            delays: ONE_SECOND,
            max_attempts: 3,
        };
        assert!(p.next_delay(2, None).is_some());
        assert_eq!(p.next_delay(3, None), None);
    }

    #[test]
    fn retry_after_longer_than_table_wins() {
        let p = RetryPolicy::STANDARD;
        assert_eq!(p.next_delay(1, Some(secs(90))), Some(secs(90)));
        assert_eq!(p.next_delay(1, Some(secs(1))), Some(secs(5)));
    }

    proptest! {
        #[test]
        fn delays_never_shrink_and_stop_at_budget(max in 1u32..40, after in proptest::option::of(0u64..10_000)) {
            let p = RetryPolicy { max_attempts: max, ..RetryPolicy::STANDARD };
            let after = after.map(secs);
            let mut previous = Duration::ZERO;
            for attempt in 1..max {
                let d = p.next_delay(attempt, after).unwrap();
                prop_assert!(d >= previous);
                previous = d;
            }
            prop_assert_eq!(p.next_delay(max, after), None);
        }
    }
}
