//! Outbound webhooks of the changes feed: subscriptions per tenant, their delivery
//! position in the change log, ok/retry/stop state and every attempt.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::feed::Position;

/// Most webhooks one tenant may register.
pub const MAX_PER_TENANT: i64 = 20;

#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub entities: Vec<String>,
    pub fields: Vec<String>,
    pub metadata: String,
    pub created_at: DateTime<Utc>,
    pub state: String,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("a tenant may have at most {MAX_PER_TENANT} webhooks")]
    TooMany,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

const COLUMNS: &str =
    "id, url, entities, fields, metadata, created_at, state, last_sent_at, last_error";

fn webhook(row: &sqlx::postgres::PgRow) -> Result<Webhook, sqlx::Error> {
    Ok(Webhook {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        entities: row.try_get("entities")?,
        fields: row.try_get("fields")?,
        metadata: row.try_get("metadata")?,
        created_at: row.try_get("created_at")?,
        state: row.try_get("state")?,
        last_sent_at: row.try_get("last_sent_at")?,
        last_error: row.try_get("last_error")?,
    })
}

/// A new signing secret, Standard Webhooks style: `whsec_` + base64 of 32 random bytes.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Registers a webhook; it receives changes committed from now on. Returns it with its
/// signing secret (shown only here).
pub async fn create(
    conn: &mut PgConnection,
    tenant: Uuid,
    url: &str,
    entities: &[String],
    fields: &[String],
    metadata: &str,
) -> Result<(Webhook, String), WebhookError> {
    sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhooks WHERE tenant_id = $1 AND deleted_at IS NULL",
    )
    .bind(tenant)
    .fetch_one(&mut *conn)
    .await?;
    if count >= MAX_PER_TENANT {
        return Err(WebhookError::TooMany);
    }
    let secret = new_secret();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhooks (tenant_id, url, entities, fields, metadata, secret)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(url)
    .bind(entities)
    .bind(fields)
    .bind(metadata)
    .bind(&secret)
    .fetch_one(conn)
    .await?;
    Ok((webhook(&row)?, secret))
}

pub async fn list(conn: &mut PgConnection, tenant: Uuid) -> Result<Vec<Webhook>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhooks WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id"
    )))
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    rows.iter().map(webhook).collect()
}

/// Deletes the tenant's webhook; it receives nothing more. `false` if there is none.
pub async fn delete(conn: &mut PgConnection, tenant: Uuid, id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL")
        .bind(id)
        .bind(tenant)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts a stopped (or retrying) webhook back to `ok`; `false` if there is none.
pub async fn resume(conn: &mut PgConnection, id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhooks SET state = 'ok', lease_until = NULL WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What one delivery needs.
#[derive(Clone)]
pub struct Target {
    pub tenant: Uuid,
    pub url: String,
    pub secret: String,
    pub entities: Vec<String>,
    pub position: Position,
}

pub enum Lease {
    /// This delivery holds the webhook until it records its outcome.
    Held(Target),
    /// Another delivery is in flight.
    Busy,
    /// Deleted or stopped.
    Inactive,
}

/// Takes the webhook for one delivery (for at most `seconds`, in case we die).
pub async fn lease(conn: &mut PgConnection, id: i64, seconds: i64) -> Result<Lease, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE webhooks SET lease_until = now() + $2 * interval '1 second'
         WHERE id = $1 AND deleted_at IS NULL AND state <> 'stop'
           AND (lease_until IS NULL OR lease_until < now())
         RETURNING tenant_id, url, secret, entities, position_txid::text AS txid, position_id",
    )
    .bind(id)
    .bind(seconds as f64)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        let txid: String = row.try_get("txid")?;
        return Ok(Lease::Held(Target {
            tenant: row.try_get("tenant_id")?,
            url: row.try_get("url")?,
            secret: row.try_get("secret")?,
            entities: row.try_get("entities")?,
            position: Position {
                txid: txid
                    .parse()
                    .map_err(|_| sqlx::Error::Decode("txid".into()))?,
                id: row.try_get("position_id")?,
            },
        }));
    }
    let active: Option<bool> = sqlx::query_scalar(
        "SELECT deleted_at IS NULL AND state <> 'stop' FROM webhooks WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(if active == Some(true) {
        Lease::Busy
    } else {
        Lease::Inactive
    })
}

/// One delivery attempt as it happened.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub sent_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub changes: i32,
    pub resp_status: Option<i32>,
    pub resp_body: Option<String>,
    pub error: Option<String>,
}

async fn record(conn: &mut PgConnection, id: i64, attempt: &Attempt) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_attempts (webhook_id, sent_at, duration_ms, changes, resp_status, resp_body, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(attempt.sent_at)
    .bind(attempt.duration_ms)
    .bind(attempt.changes)
    .bind(attempt.resp_status)
    .bind(&attempt.resp_body)
    .bind(&attempt.error)
    .execute(conn)
    .await?;
    Ok(())
}

/// After a successful delivery: the position moves on, state `ok`, lease released.
pub async fn delivered(
    conn: &mut PgConnection,
    id: i64,
    up_to: Position,
    attempt: &Attempt,
) -> Result<(), sqlx::Error> {
    record(conn, id, attempt).await?;
    sqlx::query(
        "UPDATE webhooks SET position_txid = $2::text::xid8, position_id = $3, state = 'ok',
             last_sent_at = $4, lease_until = NULL
         WHERE id = $1",
    )
    .bind(id)
    .bind(up_to.txid.to_string())
    .bind(up_to.id)
    .bind(attempt.sent_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// After a failed delivery: state `retry` (or `stop` when no retry is left), the error
/// in the seed's shape, lease released.
pub async fn failed(
    conn: &mut PgConnection,
    id: i64,
    attempt: &Attempt,
    retried: u32,
    stop: bool,
) -> Result<(), sqlx::Error> {
    record(conn, id, attempt).await?;
    let last_error = serde_json::json!({
        "error": attempt.error,
        "resp_status": attempt.resp_status.unwrap_or(0),
        "resp_body": attempt.resp_body.clone().unwrap_or_default(),
        "retried": retried,
        "sent_at": attempt.sent_at,
    });
    sqlx::query(
        "UPDATE webhooks SET state = CASE WHEN $3 THEN 'stop' ELSE 'retry' END, last_error = $2,
             last_sent_at = $4, lease_until = NULL
         WHERE id = $1",
    )
    .bind(id)
    .bind(last_error)
    .bind(stop)
    .bind(attempt.sent_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives the lease back without a delivery (nothing to send).
pub async fn release(conn: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE webhooks SET lease_until = NULL WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
