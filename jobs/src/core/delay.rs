//! The one bound on delays that come from outside: a partner's `Retry-After`, a retry
//! table scaled by a setting, a pacing slot pushed back after a 429. Every caller goes
//! through [`clamp`], so no answer can park a job, or a shared pacing slot, for decades.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Default for the longest delay: a day.
pub const DEFAULT_MAX: Duration = Duration::from_secs(86_400);

static MAX_MILLIS: AtomicU64 = AtomicU64::new(DEFAULT_MAX.as_millis() as u64);

/// Sets the process's longest delay (`SYNCLINE_MAX_DELAY_SECS`); at least a second.
pub fn set_max(max: Duration) {
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1000);
    MAX_MILLIS.store(millis, Ordering::Relaxed);
}

pub fn max() -> Duration {
    Duration::from_millis(MAX_MILLIS.load(Ordering::Relaxed))
}

/// `delay`, cut to the longest delay allowed.
pub fn clamp(delay: Duration) -> Duration {
    delay.min(max())
}

/// `delay × factor`, clamped; a factor that is not a positive finite number leaves the
/// delay as it is. Never panics, whatever the inputs.
pub fn scaled(delay: Duration, factor: f64) -> Duration {
    let delay = clamp(delay);
    if !(factor.is_finite() && factor > 0.0) {
        return delay;
    }
    clamp(Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or_else(|_| max()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_partners_largest_retry_after_is_cut_to_the_maximum() {
        assert_eq!(clamp(Duration::from_secs(u64::MAX)), max());
        assert_eq!(scaled(Duration::from_secs(u64::MAX), 1.0), max());
        assert_eq!(scaled(Duration::MAX, 0.001), max().mul_f64(0.001));
    }

    #[test]
    fn short_delays_pass_unchanged_and_bad_factors_are_ignored() {
        assert_eq!(clamp(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(scaled(Duration::from_secs(10), 0.5), Duration::from_secs(5));
        for factor in [f64::NAN, f64::INFINITY, -1.0, 0.0] {
            assert_eq!(
                scaled(Duration::from_secs(10), factor),
                Duration::from_secs(10)
            );
        }
    }

    proptest! {
        #[test]
        fn scaled_never_exceeds_the_maximum(secs in any::<u64>(), nanos in 0u32..1_000_000_000, factor in any::<f64>()) {
            let d = scaled(Duration::new(secs, nanos), factor);
            prop_assert!(d <= max());
        }
    }
}
