//! Operator endpoints for remote favourites sources (Conference Compass protocol) and
//! the per-user tokens `favourites.reconcile` presents to them.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use syncline_domain::favourites::{UserId, sources};
use syncline_jobs::reconcile;
use uuid::Uuid;

use super::{AppState, Tag, auth::AdminAuth, error::ApiError};
use crate::tenancy::{Name, TenancyError};

#[derive(Object)]
pub struct NewSource {
    /// 1 to 100 characters, unique within the tenant.
    pub name: String,
    /// Base URL of the remote; `/getUserFavorites` and `/postUserFavorites` are appended.
    pub base_url: String,
}

#[derive(Object)]
pub struct SourceView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub base_url: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Object)]
pub struct RemoteToken {
    /// The token the remote accepts for this user. Stored, never returned.
    pub token: String,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ReconcileQueued {
    /// The new job, or none when one for this source and user was already waiting.
    pub job_id: Option<String>,
}

#[derive(ApiResponse)]
pub enum TokenSet {
    /// The token is stored.
    #[oai(status = 204)]
    Stored,
}

impl From<sources::Source> for SourceView {
    fn from(s: sources::Source) -> Self {
        Self {
            id: s.id,
            tenant_id: s.tenant_id,
            name: s.name,
            base_url: s.base_url,
            created_at: s.created_at,
        }
    }
}

/// An http(s) URL without credentials (tokens travel in headers, not URLs).
pub fn parse_http_url(raw: &str) -> Result<reqwest::Url, ApiError> {
    reqwest::Url::parse(raw)
        .ok()
        .filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.username().is_empty()
                && u.password().is_none()
        })
        .ok_or_else(|| ApiError::bad_request("the URL must be http(s) without credentials"))
}

fn source_error(e: sqlx::Error) -> ApiError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            TenancyError::Conflict("a source with this name exists".into()).into()
        }
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            ApiError::not_found("tenant not found")
        }
        _ => e.into(),
    }
}

pub struct AdminSourcesApi;

#[OpenApi(prefix_path = "/admin", tag = "Tag::Admin")]
impl AdminSourcesApi {
    /// Add a remote favourites source to a tenant.
    #[oai(path = "/tenants/:tenant_id/favourite-sources", method = "post")]
    async fn create_source(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        tenant_id: Path<Uuid>,
        body: Json<NewSource>,
    ) -> Result<Json<SourceView>, ApiError> {
        let name = Name::parse(&body.name, "name")?;
        let url = parse_http_url(&body.base_url)?;
        let mut conn = state.pool.acquire().await?;
        let source = sources::create(&mut conn, tenant_id.0, name.as_str(), url.as_str())
            .await
            .map_err(source_error)?;
        Ok(Json(source.into()))
    }

    /// List a tenant's remote favourites sources.
    #[oai(path = "/tenants/:tenant_id/favourite-sources", method = "get")]
    async fn list_sources(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        tenant_id: Path<Uuid>,
    ) -> Result<Json<Vec<SourceView>>, ApiError> {
        let mut conn = state.pool.acquire().await?;
        let list = sources::list(&mut conn, tenant_id.0).await?;
        Ok(Json(list.into_iter().map(Into::into).collect()))
    }

    /// Set the token the source accepts for one user, and queue a reconcile of that user.
    #[oai(
        path = "/favourite-sources/:source_id/users/:user_id/token",
        method = "put"
    )]
    async fn set_token(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        source_id: Path<Uuid>,
        user_id: Path<String>,
        body: Json<RemoteToken>,
    ) -> Result<TokenSet, ApiError> {
        let user = UserId::parse(&user_id.0)?;
        if body.token.trim().is_empty() || body.token.len() > 4096 {
            return Err(ApiError::bad_request("token must be 1 to 4096 bytes"));
        }
        let mut tx = state.pool.begin().await?;
        sources::set_user_token(&mut tx, source_id.0, &user, &body.token)
            .await?
            .ok_or_else(|| ApiError::not_found("source not found"))?;
        reconcile::enqueue_one(&mut tx, source_id.0, user.as_str()).await?;
        tx.commit().await?;
        Ok(TokenSet::Stored)
    }

    /// Queue a reconcile of one user with one source now.
    #[oai(
        path = "/favourite-sources/:source_id/users/:user_id/reconcile",
        method = "post"
    )]
    async fn reconcile_now(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        source_id: Path<Uuid>,
        user_id: Path<String>,
    ) -> Result<Json<ReconcileQueued>, ApiError> {
        let user = UserId::parse(&user_id.0)?;
        let mut tx = state.pool.begin().await?;
        sources::link(&mut tx, source_id.0, &user)
            .await?
            .ok_or_else(|| ApiError::not_found("no token for this user at this source"))?;
        let job_id = reconcile::enqueue_one(&mut tx, source_id.0, user.as_str()).await?;
        tx.commit().await?;
        Ok(Json(ReconcileQueued { job_id }))
    }
}
