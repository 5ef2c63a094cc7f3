//! An ALLIO integration's settings.

use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Clone, sqlx::FromRow)]
pub struct Settings {
    pub integration_id: Uuid,
    pub integration_uuid: Uuid,
    pub api_base_url: String,
    /// Presented to ALLIO; never log it.
    pub api_key: String,
    pub active: bool,
    pub delete_sync: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("integration_id", &self.integration_id)
            .field("integration_uuid", &self.integration_uuid)
            .field("api_base_url", &self.api_base_url)
            .field("api_key", &"<redacted>")
            .field("active", &self.active)
            .field("delete_sync", &self.delete_sync)
            .finish()
    }
}

const COLUMNS: &str =
    "integration_id, integration_uuid, api_base_url, api_key, active, delete_sync";

/// Creates or replaces the settings of an `allio` integration.
pub async fn save(conn: &mut PgConnection, s: &Settings) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO allio_settings (integration_id, integration_uuid, api_base_url, api_key, active, delete_sync)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (integration_id) DO UPDATE SET
             integration_uuid = EXCLUDED.integration_uuid, api_base_url = EXCLUDED.api_base_url,
             api_key = EXCLUDED.api_key, active = EXCLUDED.active,
             delete_sync = EXCLUDED.delete_sync, updated_at = now()",
    )
    .bind(s.integration_id)
    .bind(s.integration_uuid)
    .bind(&s.api_base_url)
    .bind(&s.api_key)
    .bind(s.active)
    .bind(s.delete_sync)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn load(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<Option<Settings>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM allio_settings WHERE integration_id = $1"
    )))
    .bind(integration_id)
    .fetch_optional(conn)
    .await
}

/// Integrations with the delete control switched on and active.
pub async fn with_delete_sync(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT integration_id FROM allio_settings WHERE delete_sync AND active ORDER BY integration_id")
        .fetch_all(conn)
        .await
}
