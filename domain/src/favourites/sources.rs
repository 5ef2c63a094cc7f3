//! Remote favourites sources (servers speaking the Conference Compass protocol) that
//! `favourites.reconcile` keeps in two-way sync, and the per-user tokens they accept.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::UserId;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Source {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub base_url: String,
    pub created_at: DateTime<Utc>,
}

/// What reconciling one user with one source needs.
#[derive(Clone)]
pub struct Link {
    pub tenant_id: Uuid,
    pub base_url: String,
    /// Presented to the remote; never log it.
    pub token: String,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("tenant_id", &self.tenant_id)
            .field("base_url", &self.base_url)
            .field("token", &"<redacted>")
            .finish()
    }
}

pub async fn create(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: &str,
    base_url: &str,
) -> Result<Source, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO favourite_sources (id, tenant_id, name, base_url) VALUES ($1, $2, $3, $4)
         RETURNING id, tenant_id, name, base_url, created_at",
    )
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(name)
    .bind(base_url)
    .fetch_one(conn)
    .await
}

pub async fn list(conn: &mut PgConnection, tenant_id: Uuid) -> Result<Vec<Source>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, name, base_url, created_at FROM favourite_sources
         WHERE tenant_id = $1 ORDER BY created_at, name",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

/// Sets (or replaces) the token the source accepts for `user`. Returns the source's
/// tenant, or `None` if there is no such source.
pub async fn set_user_token(
    conn: &mut PgConnection,
    source_id: Uuid,
    user: &UserId,
    token: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO favourite_source_tokens (source_id, user_id, token)
         SELECT id, $2, $3 FROM favourite_sources WHERE id = $1
         ON CONFLICT (source_id, user_id) DO UPDATE SET token = EXCLUDED.token, updated_at = now()
         RETURNING (SELECT tenant_id FROM favourite_sources WHERE id = $1)",
    )
    .bind(source_id)
    .bind(user.as_str())
    .bind(token)
    .fetch_optional(conn)
    .await
}

pub async fn link(
    conn: &mut PgConnection,
    source_id: Uuid,
    user: &UserId,
) -> Result<Option<Link>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT s.tenant_id, s.base_url, t.token
         FROM favourite_sources s JOIN favourite_source_tokens t ON t.source_id = s.id
         WHERE s.id = $1 AND t.user_id = $2",
    )
    .bind(source_id)
    .bind(user.as_str())
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(Link {
            tenant_id: r.try_get("tenant_id")?,
            base_url: r.try_get("base_url")?,
            token: r.try_get("token")?,
        })
    })
    .transpose()
}

/// Sources of the tenant holding a token for `user`.
pub async fn linked_sources(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user: &UserId,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT s.id FROM favourite_sources s JOIN favourite_source_tokens t ON t.source_id = s.id
         WHERE s.tenant_id = $1 AND t.user_id = $2 ORDER BY s.id",
    )
    .bind(tenant_id)
    .bind(user.as_str())
    .fetch_all(conn)
    .await
}

/// Every (source, user) pair with a token, for the periodic sweep.
pub async fn all_links(conn: &mut PgConnection) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT source_id, user_id FROM favourite_source_tokens ORDER BY source_id, user_id",
    )
    .fetch_all(conn)
    .await
}
