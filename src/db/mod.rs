//! The database: connecting (to `DATABASE_URL` or the embedded cluster) and migrating.

pub mod embedded;
pub mod migrate;

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

/// Connects, retrying while the server is starting up or briefly unreachable.
pub async fn connect_with_retry(
    url: &str,
    patience: Duration,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow::anyhow!("cannot connect to Postgres: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
