//! Request pacing shared by every worker process: a GCRA whose state (the theoretical
//! arrival time of the next request per key) lives in Postgres, so `n` processes
//! together still send at most `rate` requests per second per key.

use std::time::Duration;

use sqlx::PgPool;

/// Spacing for `rate` requests per second, plus a few milliseconds so that scheduling
/// jitter on our side never lets two requests land closer than the partner allows.
pub fn interval_for(rate_per_sec: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate_per_sec.max(0.001)) + Duration::from_millis(5)
}

/// Reserves the next slot for `key` and returns how long to wait for it.
pub async fn reserve(
    pool: &PgPool,
    key: &str,
    interval: Duration,
) -> Result<Duration, sqlx::Error> {
    let wait_ms: f64 = sqlx::query_scalar(
        "INSERT INTO rate_limits AS r (key, tat)
         VALUES ($1, clock_timestamp() + $2 * interval '1 millisecond')
         ON CONFLICT (key) DO UPDATE
             SET tat = GREATEST(r.tat, clock_timestamp()) + $2 * interval '1 millisecond'
         RETURNING GREATEST(0, EXTRACT(EPOCH FROM (tat - $2 * interval '1 millisecond' - clock_timestamp())) * 1000)::float8",
    )
    .bind(key)
    .bind(interval.as_secs_f64() * 1000.0)
    .fetch_one(pool)
    .await?;
    Ok(Duration::from_secs_f64(wait_ms / 1000.0))
}

/// Waits for the next slot of `key`; returns the time waited.
pub async fn acquire(
    pool: &PgPool,
    key: &str,
    interval: Duration,
) -> Result<Duration, sqlx::Error> {
    let wait = reserve(pool, key, interval).await?;
    tokio::time::sleep(wait).await;
    super::metrics::pacing_wait(wait);
    Ok(wait)
}

/// Pushes the next slot of `key` at least `by` (clamped) into the future (after a 429).
pub async fn slow_down(pool: &PgPool, key: &str, by: Duration) -> Result<(), sqlx::Error> {
    let by = super::delay::clamp(by);
    sqlx::query(
        "INSERT INTO rate_limits AS r (key, tat) VALUES ($1, clock_timestamp() + $2 * interval '1 millisecond')
         ON CONFLICT (key) DO UPDATE
             SET tat = GREATEST(r.tat, clock_timestamp() + $2 * interval '1 millisecond')",
    )
    .bind(key)
    .bind(by.as_secs_f64() * 1000.0)
    .execute(pool)
    .await?;
    Ok(())
}
