//! Lets a partner check its token: which tenant and integration it stands for.

use poem_openapi::{Object, OpenApi, payload::Json};
use uuid::Uuid;

use super::{Tag, auth::PartnerAuth, error::ApiError};
use crate::tenancy::IntegrationKind;

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Identity {
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub kind: IntegrationKind,
    /// Set when the token was issued for one user.
    pub user_id: Option<String>,
}

pub struct WhoamiApi;

#[OpenApi(tag = "Tag::Partner")]
impl WhoamiApi {
    /// The identity behind the presented token.
    ///
    /// A missing or unknown token is a 401.
    #[oai(path = "/v1/whoami", method = "get")]
    async fn whoami(&self, auth: PartnerAuth) -> Result<Json<Identity>, ApiError> {
        let p = auth.0;
        Ok(Json(Identity {
            tenant_id: p.tenant_id,
            integration_id: p.integration_id,
            kind: p.kind,
            user_id: p.user_id,
        }))
    }
}
