//! The database: connecting (to `DATABASE_URL` or the embedded cluster) and migrating.

pub mod embedded;
pub mod migrate;

use std::time::Duration;

use sqlx::{Connection, PgPool, postgres::PgPoolOptions};

/// How long a caller waits for a pooled connection. While the server is unreachable sqlx
/// keeps retrying the connect until this runs out (`PoolTimedOut`), so it bounds how long
/// an API request takes to answer 503 during an outage; under load a connection is
/// normally handed over within milliseconds.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// A pooled connection idle for longer than this is checked with a round trip before it
/// is handed out (one left over from before a server restart is then replaced); busy
/// connections are handed out as they are, which saves that round trip per request.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The settings of every pool syncline opens.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > CHECK_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Connects, retrying while the server is starting up or briefly unreachable.
pub async fn connect_with_retry(
    url: &str,
    patience: Duration,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match pool_options(max_connections).connect(url).await {
            Ok(pool) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow::anyhow!("cannot connect to Postgres: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
