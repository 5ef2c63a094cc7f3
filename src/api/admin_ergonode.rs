//! Operator endpoint for Ergonode integrations: the App's shared JWT secret.

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use uuid::Uuid;

use super::{AppState, Tag, admin_allio::require_kind, auth::AdminAuth, error::ApiError};
use crate::tenancy::IntegrationKind;

#[derive(Object)]
pub struct ErgonodeSettingsInput {
    /// The HS256 secret Ergonode signs `X-APP-TOKEN` with (at least 16 bytes). Stored,
    /// never returned.
    pub jwt_secret: String,
}

#[derive(ApiResponse)]
pub enum Saved {
    /// Saved.
    #[oai(status = 204)]
    Saved,
}

pub struct AdminErgonodeApi;

#[OpenApi(prefix_path = "/admin/integrations", tag = "Tag::Admin")]
impl AdminErgonodeApi {
    /// Set an Ergonode integration's secret. Configure the App's URL in Ergonode as
    /// `<syncline URL>/ergonode/<integration id>`.
    #[oai(path = "/:integration_id/ergonode", method = "put")]
    async fn save(
        &self,
        _auth: AdminAuth,
        state: Data<&AppState>,
        integration_id: Path<Uuid>,
        body: Json<ErgonodeSettingsInput>,
    ) -> Result<Saved, ApiError> {
        if body.jwt_secret.len() < 16 || body.jwt_secret.len() > 4096 {
            return Err(ApiError::bad_request("jwt_secret must be 16 to 4096 bytes"));
        }
        let mut tx = state.pool.begin().await?;
        require_kind(&mut tx, integration_id.0, IntegrationKind::Ergonode).await?;
        sqlx::query(
            "INSERT INTO ergonode_settings (integration_id, jwt_secret) VALUES ($1, $2)
             ON CONFLICT (integration_id) DO UPDATE SET jwt_secret = EXCLUDED.jwt_secret, updated_at = now()",
        )
        .bind(integration_id.0)
        .bind(&body.jwt_secret)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Saved::Saved)
    }
}
