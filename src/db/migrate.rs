//! Both migration sets, applied idempotently: apalis's (recorded by sqlx in the default
//! `_sqlx_migrations` table) and ours (recorded in `_syncline_migrations`), so neither
//! set ever sees the other's versions as unknown. apalis's tables are no longer used
//! (job core v2 keeps jobs in its own), but its set still runs first so that a database
//! from an earlier release has its queued jobs carried over by our migration 9.
//! Then the job core installs the SQL it generates from Rust constants.

use apalis_postgres::PostgresStorage;
use sqlx::PgPool;

pub async fn run(pool: &PgPool) -> anyhow::Result<()> {
    PostgresStorage::setup(pool)
        .await
        .map_err(|e| anyhow::anyhow!("apalis migrations failed: {e}"))?;
    let mut ours = sqlx::migrate!("./migrations");
    ours.dangerous_set_table_name("_syncline_migrations");
    ours.run(pool).await?;
    syncline_jobs::install(pool).await?;
    Ok(())
}
