//! Sync tasks: claimed (status 1) while a job works on them, then done (2) or error (3).

use std::time::Duration;

use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::Entity;

pub const NEW: i16 = 0;
pub const PROCESSING: i16 = 1;
pub const DONE: i16 = 2;
pub const ERROR: i16 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: i64,
    pub entity: Entity,
    pub ids: Vec<i64>,
}

/// Which tasks to claim: those needing a fetch, or the deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fetch,
    Delete,
}

/// Puts tasks left in processing by a crashed worker (claimed longer than `after` ago)
/// back to new.
pub async fn release_stuck(
    conn: &mut PgConnection,
    integration_id: Uuid,
    after: Duration,
) -> Result<u64, sqlx::Error> {
    let released = sqlx::query(
        "UPDATE allio_tasks SET status = 0, claimed_by = NULL, claimed_at = NULL, updated_at = now()
         WHERE integration_id = $1 AND status = 1 AND claimed_at < now() - $2 * interval '1 millisecond'",
    )
    .bind(integration_id)
    .bind(after.as_millis() as f64)
    .execute(conn)
    .await?;
    Ok(released.rows_affected())
}

/// Claims up to `limit` new tasks of the integration for `claimer`, oldest first, along
/// with any `claimer` already holds (left by an earlier attempt that did not finish).
pub async fn claim(
    conn: &mut PgConnection,
    integration_id: Uuid,
    kind: Kind,
    claimer: &str,
    limit: i64,
) -> Result<Vec<Task>, sqlx::Error> {
    let deletes = kind == Kind::Delete;
    let rows = sqlx::query(
        "UPDATE allio_tasks SET status = 1, claimed_by = $2, claimed_at = now(), updated_at = now()
         WHERE id IN (
             SELECT id FROM allio_tasks
             WHERE integration_id = $1 AND (command LIKE '%\\_DEL') = $3
               AND (status = 0 OR (status = 1 AND claimed_by = $2))
             ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
         RETURNING id, entity, external_ids",
    )
    .bind(integration_id)
    .bind(claimer)
    .bind(deletes)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    let mut tasks: Vec<Task> = rows
        .into_iter()
        .map(|row| {
            let entity: String = row.try_get("entity")?;
            let ids: String = row.try_get("external_ids")?;
            Ok(Task {
                id: row.try_get("id")?,
                entity: Entity::parse(&entity)
                    .ok_or_else(|| sqlx::Error::Decode(format!("entity {entity}").into()))?,
                ids: serde_json::from_str(&ids).map_err(|e| sqlx::Error::Decode(e.into()))?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    tasks.sort_by_key(|t| t.id);
    Ok(tasks)
}

/// Sets the final (or initial, for `NEW`) status of tasks; an error text goes with 3.
pub async fn set_status(
    conn: &mut PgConnection,
    task_ids: &[i64],
    status: i16,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE allio_tasks SET status = $2, error = $3, updated_at = now(),
             claimed_by = CASE WHEN $2 = 0 THEN NULL ELSE claimed_by END,
             claimed_at = CASE WHEN $2 = 0 THEN NULL ELSE claimed_at END
         WHERE id = ANY($1)",
    )
    .bind(task_ids)
    .bind(status)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}
