//! Operator endpoints for tenants, integrations and tokens.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};
use uuid::Uuid;

use super::{AppState, Tag, auth::AdminAuth, error::ApiError};
use crate::tenancy::{self, IntegrationKind, Name};

#[derive(Object)]
pub struct NewTenant {
    /// 1 to 100 characters, unique.
    pub name: String,
}

#[derive(Object)]
pub struct TenantView {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Object)]
pub struct NewIntegration {
    pub kind: IntegrationKind,
    /// 1 to 100 characters, unique within the tenant.
    pub name: String,
}

#[derive(Object)]
pub struct IntegrationView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: IntegrationKind,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Object)]
pub struct CreatedIntegration {
    pub integration: IntegrationView,
    /// The integration's token. Shown only in this response; store it now.
    pub token: String,
}

#[derive(Object)]
pub struct NewUserToken {
    /// The partner's identifier for the user (1 to 200 characters).
    pub user_id: String,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ResumedWebhook {
    /// The queued delivery (none if one was already waiting).
    pub job_id: Option<String>,
}

#[derive(Object)]
pub struct CreatedToken {
    pub credential_id: Uuid,
    /// Shown only in this response; store it now.
    pub token: String,
}

impl From<tenancy::Tenant> for TenantView {
    fn from(t: tenancy::Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
        }
    }
}

impl From<tenancy::Integration> for IntegrationView {
    fn from(i: tenancy::Integration) -> Self {
        Self {
            id: i.id,
            tenant_id: i.tenant_id,
            kind: i.kind,
            name: i.name,
            created_at: i.created_at,
        }
    }
}

pub struct AdminApi;

#[OpenApi(prefix_path = "/admin", tag = "Tag::Admin")]
impl AdminApi {
    /// Create a tenant.
    #[oai(path = "/tenants", method = "post")]
    async fn create_tenant(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        body: Json<NewTenant>,
    ) -> Result<Json<TenantView>, ApiError> {
        let name = Name::parse(&body.name, "name")?;
        Ok(Json(
            tenancy::create_tenant(&state.pool, &name).await?.into(),
        ))
    }

    /// List tenants, oldest first.
    #[oai(path = "/tenants", method = "get")]
    async fn list_tenants(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
    ) -> Result<Json<Vec<TenantView>>, ApiError> {
        let tenants = tenancy::list_tenants(&state.pool).await?;
        Ok(Json(tenants.into_iter().map(Into::into).collect()))
    }

    /// Create an integration of a tenant; answers with its token, once.
    #[oai(path = "/tenants/:tenant_id/integrations", method = "post")]
    async fn create_integration(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        tenant_id: Path<Uuid>,
        body: Json<NewIntegration>,
    ) -> Result<Json<CreatedIntegration>, ApiError> {
        let name = Name::parse(&body.name, "name")?;
        let (integration, token) =
            tenancy::create_integration(&state.pool, tenant_id.0, body.kind, &name).await?;
        Ok(Json(CreatedIntegration {
            integration: integration.into(),
            token: token.token,
        }))
    }

    /// List a tenant's integrations (tokens are never listed).
    #[oai(path = "/tenants/:tenant_id/integrations", method = "get")]
    async fn list_integrations(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        tenant_id: Path<Uuid>,
    ) -> Result<Json<Vec<IntegrationView>>, ApiError> {
        let list = tenancy::list_integrations(&state.pool, tenant_id.0).await?;
        Ok(Json(list.into_iter().map(Into::into).collect()))
    }

    /// Resume a stopped (or retrying) feed webhook: state back to `ok`, delivery queued.
    #[oai(path = "/webhooks/:webhook_id/resume", method = "post")]
    async fn resume_webhook(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        webhook_id: Path<i64>,
    ) -> Result<Json<ResumedWebhook>, ApiError> {
        let mut tx = state.pool.begin().await?;
        if !syncline_domain::webhooks::resume(&mut tx, webhook_id.0).await? {
            return Err(ApiError::not_found("no such webhook"));
        }
        let job = syncline_jobs::webhook_deliver::Deliver {
            webhook_id: webhook_id.0,
        };
        let options = syncline_jobs::core::EnqueueOptions {
            dedupe_key: Some(webhook_id.0.to_string()),
            ..Default::default()
        };
        let job_id = syncline_jobs::core::enqueue(&mut tx, &job, options).await?;
        tx.commit().await?;
        Ok(Json(ResumedWebhook { job_id }))
    }

    /// Issue a token for one user of an integration; answers with it, once.
    #[oai(path = "/integrations/:integration_id/user-tokens", method = "post")]
    async fn create_user_token(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        integration_id: Path<Uuid>,
        body: Json<NewUserToken>,
    ) -> Result<Json<CreatedToken>, ApiError> {
        let token = tenancy::issue_user_token(&state.pool, integration_id.0, &body.user_id).await?;
        Ok(Json(CreatedToken {
            credential_id: token.credential_id,
            token: token.token,
        }))
    }
}
