//! Who may call what: the operator's admin token, and partners' integration tokens.

use poem::{Request, http::StatusCode};
use poem_openapi::{SecurityScheme, auth::Bearer};

use super::{AppState, error::ApiError};
use crate::tenancy::{self, IntegrationKind};

/// Operator access: `Authorization: Bearer <SYNCLINE_ADMIN_TOKEN>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_admin")]
pub struct AdminAuth(());

async fn check_admin(req: &Request, bearer: Bearer) -> Option<()> {
    let state = req.data::<AppState>()?;
    state.is_admin_token(&bearer.token).then_some(())
}

/// Partner access: `Authorization: Bearer <token issued for an integration or user>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_partner")]
pub struct PartnerAuth(pub tenancy::Principal);

async fn check_partner(req: &Request, bearer: Bearer) -> poem::Result<tenancy::Principal> {
    partner(req, &bearer, |_| true).await
}

/// IMSHOP's app server: `Authorization: Bearer <token of an imshop integration>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_imshop")]
pub struct ImshopAuth(pub tenancy::Principal);

async fn check_imshop(req: &Request, bearer: Bearer) -> poem::Result<tenancy::Principal> {
    partner(req, &bearer, |p| p.kind == IntegrationKind::Imshop).await
}

/// A signed-in Conference Compass user: `Authorization: Bearer <user token of a cc integration>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_cc_user")]
pub struct CcUserAuth(pub tenancy::Principal);

async fn check_cc_user(req: &Request, bearer: Bearer) -> poem::Result<tenancy::Principal> {
    partner(req, &bearer, |p| {
        p.kind == IntegrationKind::Cc && p.user_id.is_some()
    })
    .await
}

/// A partner polling the changes feed: `Authorization: Bearer <token of a feed integration>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_feed")]
pub struct FeedAuth(pub tenancy::Principal);

async fn check_feed(req: &Request, bearer: Bearer) -> poem::Result<tenancy::Principal> {
    partner(req, &bearer, |p| p.kind == IntegrationKind::Feed).await
}

/// The token's principal if it exists and `allowed` accepts it; 401 otherwise, 503 when
/// the database cannot say.
async fn partner(
    req: &Request,
    bearer: &Bearer,
    allowed: impl Fn(&tenancy::Principal) -> bool,
) -> poem::Result<tenancy::Principal> {
    let unauthorized = || poem::Error::from_string("invalid token", StatusCode::UNAUTHORIZED);
    let state = req.data::<AppState>().ok_or_else(unauthorized)?;
    match tenancy::authenticate(&state.pool, &bearer.token).await {
        Ok(Some(principal)) if allowed(&principal) => Ok(principal),
        Ok(_) => Err(unauthorized()),
        Err(e) => Err(ApiError::from(e).into()),
    }
}
