//! Operator endpoints for ALLIO integrations: settings and the on-demand delete sweep.

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use syncline_domain::allio::settings::{self, Settings};
use syncline_jobs::allio_delete_sweep;
use uuid::Uuid;

use super::{AppState, Tag, admin_sources::parse_http_url, auth::AdminAuth, error::ApiError};
use crate::tenancy::{self, IntegrationKind};

#[derive(Object)]
pub struct AllioSettingsInput {
    /// The `uuid` ALLIO puts in every webhook body for this integration.
    pub integration_uuid: Uuid,
    /// ALLIO API base URL; `reserve/list` and `dealcard/list` are appended.
    pub api_base_url: String,
    /// Presented to ALLIO as `x-api-key`. Stored, never returned.
    pub api_key: String,
    /// Inactive integrations reject webhooks and fetch nothing.
    #[oai(default = "yes")]
    pub active: bool,
    /// The "delete control": sweep `*_DEL` tasks once a day.
    #[oai(default)]
    pub delete_sync: bool,
}

fn yes() -> bool {
    true
}

#[derive(ApiResponse)]
pub enum SettingsSaved {
    /// Saved.
    #[oai(status = 204)]
    Saved,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SweepQueued {
    pub job_id: Option<String>,
}

/// Fails unless `id` is an integration of `kind`.
pub async fn require_kind(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    kind: IntegrationKind,
) -> Result<(), ApiError> {
    match tenancy::integration_kind(conn, id).await? {
        Some(k) if k == kind => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!(
            "not an {} integration",
            kind.as_str()
        ))),
        None => Err(ApiError::not_found("integration not found")),
    }
}

pub struct AdminAllioApi;

#[OpenApi(prefix_path = "/admin/integrations", tag = "Tag::Admin")]
impl AdminAllioApi {
    /// Set an ALLIO integration's settings. Its webhook URL is
    /// `/allio/webhook/<the integration's token>`.
    #[oai(path = "/:integration_id/allio", method = "put")]
    async fn save(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        integration_id: Path<Uuid>,
        body: Json<AllioSettingsInput>,
    ) -> Result<SettingsSaved, ApiError> {
        let url = parse_http_url(&body.api_base_url)?;
        if body.api_key.trim().is_empty() || body.api_key.len() > 4096 {
            return Err(ApiError::bad_request("api_key must be 1 to 4096 bytes"));
        }
        let mut tx = state.pool.begin().await?;
        require_kind(&mut tx, integration_id.0, IntegrationKind::Allio).await?;
        let saved = settings::save(
            &mut tx,
            &Settings {
                integration_id: integration_id.0,
                integration_uuid: body.integration_uuid,
                api_base_url: url.to_string(),
                api_key: body.api_key.clone(),
                active: body.active,
                delete_sync: body.delete_sync,
            },
        )
        .await;
        if let Err(sqlx::Error::Database(db)) = &saved
            && db.is_unique_violation()
        {
            return Err(ApiError::bad_request(
                "integration_uuid belongs to another integration",
            ));
        }
        saved?;
        tx.commit().await?;
        Ok(SettingsSaved::Saved)
    }

    /// Queue a delete sweep of this integration now (besides the daily one).
    #[oai(path = "/:integration_id/allio/delete-sweep", method = "post")]
    async fn sweep(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        integration_id: Path<Uuid>,
    ) -> Result<Json<SweepQueued>, ApiError> {
        let mut tx = state.pool.begin().await?;
        require_kind(&mut tx, integration_id.0, IntegrationKind::Allio).await?;
        let job_id = allio_delete_sweep::enqueue_sweep(&mut tx, integration_id.0, None).await?;
        tx.commit().await?;
        Ok(Json(SweepQueued { job_id }))
    }
}
