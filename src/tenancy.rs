//! Tenants, their integrations, and the tokens partners authenticate with.

use chrono::{DateTime, Utc};
use poem_openapi::Enum;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::secrets;

#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The partner protocols an integration can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize, clap::ValueEnum)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum IntegrationKind {
    Imshop,
    Cc,
    Allio,
    Ergonode,
    Feed,
}

impl IntegrationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Imshop => "imshop",
            Self::Cc => "cc",
            Self::Allio => "allio",
            Self::Ergonode => "ergonode",
            Self::Feed => "feed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::Imshop,
            Self::Cc,
            Self::Allio,
            Self::Ergonode,
            Self::Feed,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// A display name: 1 to 100 characters after trimming.
#[derive(Debug, Clone)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn parse(raw: &str, what: &str) -> Result<Self, TenancyError> {
        let trimmed = raw.trim();
        match trimmed.chars().count() {
            1..=100 => Ok(Self(trimmed.to_owned())),
            _ => Err(TenancyError::Invalid(format!(
                "{what} must be 1 to 100 characters"
            ))),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Integration {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: IntegrationKind,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Integration {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        let kind: String = row.try_get("kind")?;
        Ok(Self {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            kind: IntegrationKind::parse(&kind).ok_or_else(|| sqlx::Error::ColumnDecode {
                index: "kind".into(),
                source: format!("unknown integration kind `{kind}`").into(),
            })?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Who a partner token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub kind: IntegrationKind,
    pub user_id: Option<String>,
}

/// A token as handed out: the plaintext exists only in this value.
pub struct NewToken {
    pub credential_id: Uuid,
    pub token: String,
}

fn conflict_if_duplicate(e: sqlx::Error, message: impl FnOnce() -> String) -> TenancyError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => TenancyError::Conflict(message()),
        _ => TenancyError::Database(e),
    }
}

pub async fn create_tenant(pool: &PgPool, name: &Name) -> Result<Tenant, TenancyError> {
    sqlx::query_as("INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id, name, created_at")
        .bind(Uuid::new_v4())
        .bind(&name.0)
        .fetch_one(pool)
        .await
        .map_err(|e| conflict_if_duplicate(e, || format!("tenant `{}` already exists", name.0)))
}

pub async fn list_tenants(pool: &PgPool) -> Result<Vec<Tenant>, TenancyError> {
    Ok(
        sqlx::query_as("SELECT id, name, created_at FROM tenants ORDER BY created_at, name")
            .fetch_all(pool)
            .await?,
    )
}

/// Creates an integration and its first token, in one transaction.
pub async fn create_integration(
    pool: &PgPool,
    tenant_id: Uuid,
    kind: IntegrationKind,
    name: &Name,
) -> Result<(Integration, NewToken), TenancyError> {
    let mut tx = pool.begin().await?;
    let tenant_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)")
            .bind(tenant_id)
            .fetch_one(&mut *tx)
            .await?;
    if !tenant_exists {
        return Err(TenancyError::NotFound("tenant"));
    }
    let integration: Integration = sqlx::query_as(
        "INSERT INTO integrations (id, tenant_id, kind, name) VALUES ($1, $2, $3, $4)
         RETURNING id, tenant_id, kind, name, created_at",
    )
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(kind.as_str())
    .bind(&name.0)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| conflict_if_duplicate(e, || format!("integration `{}` already exists", name.0)))?;
    let token = insert_credential(&mut tx, integration.id, None).await?;
    tx.commit().await?;
    Ok((integration, token))
}

pub async fn list_integrations(
    pool: &PgPool,
    tenant_id: Uuid,
) -> Result<Vec<Integration>, TenancyError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, kind, name, created_at FROM integrations
         WHERE tenant_id = $1 ORDER BY created_at, name",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?)
}

/// The kind of an integration, if it exists.
pub async fn integration_kind(
    conn: &mut sqlx::PgConnection,
    integration_id: Uuid,
) -> Result<Option<IntegrationKind>, TenancyError> {
    let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM integrations WHERE id = $1")
        .bind(integration_id)
        .fetch_optional(conn)
        .await?;
    Ok(kind.as_deref().and_then(IntegrationKind::parse))
}

/// A token for one user of an integration (e.g. a Conference Compass user).
pub async fn issue_user_token(
    pool: &PgPool,
    integration_id: Uuid,
    user_id: &str,
) -> Result<NewToken, TenancyError> {
    let user_id = user_id.trim();
    if user_id.is_empty() || user_id.chars().count() > 200 {
        return Err(TenancyError::Invalid(
            "user_id must be 1 to 200 characters".into(),
        ));
    }
    let mut tx = pool.begin().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM integrations WHERE id = $1)")
            .bind(integration_id)
            .fetch_one(&mut *tx)
            .await?;
    if !exists {
        return Err(TenancyError::NotFound("integration"));
    }
    let token = insert_credential(&mut tx, integration_id, Some(user_id)).await?;
    tx.commit().await?;
    Ok(token)
}

async fn insert_credential(
    conn: &mut sqlx::PgConnection,
    integration_id: Uuid,
    user_id: Option<&str>,
) -> Result<NewToken, TenancyError> {
    let issued = secrets::issue();
    let credential_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO credentials (id, integration_id, user_id, token_hash, token_hint)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(credential_id)
    .bind(integration_id)
    .bind(user_id)
    .bind(&issued.hash[..])
    .bind(&issued.hint)
    .execute(conn)
    .await?;
    Ok(NewToken {
        credential_id,
        token: issued.plaintext,
    })
}

/// Finds who holds `token`, if it is a live credential.
pub async fn authenticate<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    token: &str,
) -> Result<Option<Principal>, TenancyError> {
    let presented = secrets::hash(token);
    let row = sqlx::query(
        "SELECT c.token_hash, c.user_id, i.id AS integration_id, i.tenant_id, i.kind
         FROM credentials c JOIN integrations i ON i.id = c.integration_id
         WHERE c.token_hash = $1 AND c.revoked_at IS NULL",
    )
    .bind(&presented[..])
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: Vec<u8> = row.try_get("token_hash")?;
    if !secrets::hashes_match(&stored, &presented) {
        return Ok(None);
    }
    let kind: String = row.try_get("kind")?;
    Ok(IntegrationKind::parse(&kind).map(|kind| Principal {
        tenant_id: row.get("tenant_id"),
        integration_id: row.get("integration_id"),
        kind,
        user_id: row.get("user_id"),
    }))
}
