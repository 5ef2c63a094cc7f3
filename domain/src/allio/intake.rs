//! Webhook intake and task creation: a webhook row per accepted delivery, then one or
//! more sync tasks per webhook (at most [`IDS_PER_REQUEST`] ids each).

use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{Command, IDS_PER_REQUEST, settings::Settings};

/// Most ids one webhook may carry.
pub const MAX_IDS: usize = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntakeError {
    #[error("the integration is not active")]
    Inactive,
    #[error("uuid does not match this integration")]
    UuidMismatch,
    #[error("{0}")]
    Invalid(String),
}

/// A validated webhook delivery.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub command: String,
    pub ids: Vec<i64>,
}

impl Webhook {
    /// Checks a delivery against the integration it was sent to.
    pub fn validate(
        settings: &Settings,
        uuid: &str,
        command: &str,
        ids: Vec<i64>,
    ) -> Result<Self, IntakeError> {
        if !settings.active {
            return Err(IntakeError::Inactive);
        }
        if Uuid::parse_str(uuid.trim()).ok() != Some(settings.integration_uuid) {
            return Err(IntakeError::UuidMismatch);
        }
        let command = command.trim();
        if command.is_empty()
            || command.len() > 100
            || !command
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(IntakeError::Invalid(
                "command must be 1 to 100 letters, digits or underscores".into(),
            ));
        }
        if ids.len() > MAX_IDS {
            return Err(IntakeError::Invalid(format!(
                "at most {MAX_IDS} indexes per webhook"
            )));
        }
        if ids.iter().any(|id| *id < 0) {
            return Err(IntakeError::Invalid("indexes must not be negative".into()));
        }
        Ok(Self {
            command: command.to_owned(),
            ids,
        })
    }
}

/// Stores the delivery; returns the webhook row id.
pub async fn store(
    conn: &mut PgConnection,
    settings: &Settings,
    webhook: &Webhook,
) -> Result<i64, sqlx::Error> {
    let ids = serde_json::to_string(&webhook.ids).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query_scalar(
        "INSERT INTO allio_webhook (integration_id, integration_uuid, command, external_ids_array)
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(settings.integration_id)
    .bind(settings.integration_uuid)
    .bind(&webhook.command)
    .bind(ids)
    .fetch_one(conn)
    .await
}

/// What turning a webhook into tasks did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub integration_id: Uuid,
    pub tasks: usize,
    /// Tasks that need an ALLIO fetch (ADD/MOD) were created.
    pub needs_fetch: bool,
}

/// Turns a stored webhook into tasks and marks it processed. Running it again for the
/// same webhook creates nothing. `None` if there is no such webhook.
pub async fn ingest(
    conn: &mut PgConnection,
    webhook_id: i64,
) -> Result<Option<Ingested>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT integration_id, command, external_ids_array, processed_at IS NOT NULL AS done
         FROM allio_webhook WHERE id = $1 FOR UPDATE",
    )
    .bind(webhook_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let integration_id: Uuid = row.try_get("integration_id")?;
    let command_text: String = row.try_get("command")?;
    let unchanged = Ingested {
        integration_id,
        tasks: 0,
        needs_fetch: false,
    };
    if row.try_get::<bool, _>("done")? {
        return Ok(Some(unchanged));
    }
    let Some(command) = Command::parse(&command_text) else {
        tracing::info!(webhook_id, command = %command_text, "ALLIO command ignored");
        sqlx::query("UPDATE allio_webhook SET processed_at = now(), ignored = true WHERE id = $1")
            .bind(webhook_id)
            .execute(&mut *conn)
            .await?;
        return Ok(Some(unchanged));
    };
    let ids_text: String = row.try_get("external_ids_array")?;
    let ids: Vec<i64> =
        serde_json::from_str(&ids_text).map_err(|e| sqlx::Error::Decode(e.into()))?;
    let parts: Vec<String> = ids
        .chunks(IDS_PER_REQUEST)
        .map(|chunk| serde_json::to_string(chunk).unwrap_or_default())
        .collect();
    let numbers: Vec<i32> = (0..parts.len() as i32).collect();
    sqlx::query(
        "INSERT INTO allio_tasks (integration_id, webhook_id, part, command, entity, external_ids)
         SELECT $1, $2, part, $3, $4, ids FROM UNNEST($5::int[], $6::text[]) AS t(part, ids)
         ON CONFLICT (webhook_id, part) DO NOTHING",
    )
    .bind(integration_id)
    .bind(webhook_id)
    .bind(&command_text)
    .bind(command.entity.as_str())
    .bind(numbers)
    .bind(&parts)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE allio_webhook SET processed_at = now() WHERE id = $1")
        .bind(webhook_id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(Ingested {
        integration_id,
        tasks: parts.len(),
        needs_fetch: !command.deletes && !parts.is_empty(),
    }))
}
