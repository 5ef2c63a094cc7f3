//! The favourites protocols: IMSHOP's list sync and Conference Compass's per-item sync,
//! one store behind both. Handlers parse into domain types, run one transaction (the
//! user's row locked), and enqueue reconciles with linked remote sources in it.

use poem::web::Data;
use poem_openapi::{Enum, Object, OpenApi, payload::Json};
use syncline_domain::favourites::{
    self, FavouritesError, ItemId, UserId, cc, format_action_date, imshop,
    lww::{Action, Stamp},
    parse_action_date, store,
};
use syncline_jobs::reconcile;
use uuid::Uuid;

use super::{
    AppState, Tag,
    auth::{CcUserAuth, ImshopAuth},
    error::ApiError,
    strict::{self, JsonString},
};

impl From<FavouritesError> for ApiError {
    fn from(e: FavouritesError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

#[derive(Object)]
pub struct ImshopSyncRequest {
    /// The shop's identifier for the user (required, 1 to 200 characters).
    #[oai(rename = "userIdentifier")]
    pub user_identifier: JsonString,
    /// The app's last favourites sync, Unix milliseconds; 0 = nothing added while
    /// logged out. Not negative, at most a day ahead of our clock.
    #[oai(rename = "lastSyncDate")]
    pub last_sync_date: i64,
    /// The app's full favourites list: at most 1000 distinct ids.
    #[oai(rename = "itemIds")]
    pub item_ids: Vec<JsonString>,
}

#[derive(Object)]
pub struct ImshopSyncAnswer {
    #[oai(rename = "lastSyncDate")]
    pub last_sync_date: i64,
    #[oai(rename = "itemIds")]
    pub item_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum CcAction {
    #[oai(rename = "ADD")]
    Add,
    #[oai(rename = "DELETE")]
    Delete,
}

#[derive(Object)]
pub struct CcItem {
    /// The item's identifier.
    pub item: JsonString,
    pub action: CcAction,
    /// ISO-8601 UTC with milliseconds, e.g. `2017-05-02T10:45:12.798Z`.
    #[oai(rename = "actionDate")]
    pub action_date: JsonString,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn parse_imshop(body: &ImshopSyncRequest, now: i64) -> Result<imshop::SyncRequest, ApiError> {
    let user = UserId::parse(body.user_identifier.as_str())?;
    if !(0..=now + DAY_MS).contains(&body.last_sync_date) {
        return Err(ApiError::bad_request(
            "lastSyncDate must be Unix milliseconds, not negative and not in the future",
        ));
    }
    let items = favourites::parse_item_ids(body.item_ids.iter().map(JsonString::as_str))?;
    Ok(imshop::SyncRequest {
        user,
        last_sync_ms: body.last_sync_date,
        items,
    })
}

/// An IMSHOP request body as the route reads it (JSON, the schema, then the protocol's
/// rules); `None` where the route answers 400. A pure entry point for fuzzing.
pub fn imshop_request_from_json(body: &[u8], now_ms: i64) -> Option<imshop::SyncRequest> {
    parse_imshop(&strict::parse_body(body)?, now_ms).ok()
}

fn parse_cc_items(items: &[CcItem]) -> Result<Vec<(ItemId, Stamp)>, ApiError> {
    let ids = favourites::parse_item_ids(items.iter().map(|i| i.item.as_str()))?;
    ids.into_iter()
        .zip(items)
        .map(|(id, wire)| {
            let action = match wire.action {
                CcAction::Add => Action::Add,
                CcAction::Delete => Action::Delete,
            };
            let at_ms = parse_action_date(wire.action_date.as_str())?;
            Ok((id, Stamp { action, at_ms }))
        })
        .collect()
}

fn cc_items(states: &favourites::lww::ItemStates) -> Vec<CcItem> {
    states
        .iter()
        .map(|(item, stamp)| CcItem {
            item: JsonString(item.as_str().to_owned()),
            action: match stamp.action {
                Action::Add => CcAction::Add,
                Action::Delete => CcAction::Delete,
            },
            action_date: JsonString(format_action_date(stamp.at_ms)),
        })
        .collect()
}

fn cc_user(auth: &CcUserAuth) -> Result<UserId, ApiError> {
    let user = auth
        .0
        .user_id
        .as_deref()
        .ok_or_else(ApiError::unauthorized)?;
    Ok(UserId::parse(user)?)
}

async fn enqueue_reconciles(
    tx: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    user: &UserId,
) -> Result<(), ApiError> {
    Ok(reconcile::enqueue_for_user(tx, tenant_id, user, None).await?)
}

pub struct FavouritesApi;

#[OpenApi(tag = "Tag::Favourites")]
impl FavouritesApi {
    /// IMSHOP favourites sync. The newer side (by `lastSyncDate`) wins the whole list;
    /// equal dates echo the request; two zero dates merge both lists.
    #[oai(path = "/imshop/favorites", method = "post")]
    async fn imshop_sync(
        &self,
        auth: ImshopAuth,
        state: Data<&AppState>,
        body: Json<ImshopSyncRequest>,
    ) -> Result<Json<ImshopSyncAnswer>, ApiError> {
        let now = now_ms();
        let request = parse_imshop(&body, now)?;
        let tenant_id = auth.0.tenant_id;
        let mut tx = state.pool.begin().await?;
        let (answer, changed) = imshop::sync(&mut tx, tenant_id, &request, now).await?;
        if changed {
            enqueue_reconciles(&mut tx, tenant_id, &request.user).await?;
        }
        tx.commit().await?;
        Ok(Json(ImshopSyncAnswer {
            last_sync_date: answer.last_sync_ms,
            item_ids: answer.items.iter().map(|i| i.as_str().to_owned()).collect(),
        }))
    }

    /// Conference Compass: the user's favourites, deletions (tombstones) included.
    #[oai(path = "/getUserFavorites", method = "get")]
    async fn cc_get(
        &self,
        auth: CcUserAuth,
        state: Data<&AppState>,
    ) -> Result<Json<Vec<CcItem>>, ApiError> {
        let user = cc_user(&auth)?;
        let mut conn = state.pool.acquire().await?;
        let stored = store::read(&mut conn, auth.0.tenant_id, &user).await?;
        Ok(Json(cc_items(&stored.items)))
    }

    /// Conference Compass: apply items; each replaces ours only if its `actionDate` is
    /// strictly newer (at an exact tie, DELETE wins). Answers the resulting list.
    #[oai(path = "/postUserFavorites", method = "post")]
    async fn cc_post(
        &self,
        auth: CcUserAuth,
        state: Data<&AppState>,
        body: Json<Vec<CcItem>>,
    ) -> Result<Json<Vec<CcItem>>, ApiError> {
        let user = cc_user(&auth)?;
        let incoming = parse_cc_items(&body)?;
        let tenant_id = auth.0.tenant_id;
        let mut tx = state.pool.begin().await?;
        let (after, changed) = cc::apply(&mut tx, tenant_id, &user, &incoming, now_ms()).await?;
        if !changed.is_empty() {
            enqueue_reconciles(&mut tx, tenant_id, &user).await?;
        }
        tx.commit().await?;
        Ok(Json(cc_items(&after.items)))
    }
}
