//! Cursor polling of the changes feed, eShip style: `POST /v1/shop.<Entity>/List<Entities>`
//! with `{"paging": {"sort": "updated_at", "limit": 100, "after": "<cursor>"}}`, answering
//! `{"<entities>": [...], "paging": {"next", "prev"}}`. Keep calling with `next`; an empty
//! page still has a `next` that later returns only what changed since.

use poem::web::Data;
use poem_openapi::{Object, OpenApi, payload::Json};
use serde_json::{Map, Value, json};
use syncline_domain::feed::{self, Position, Sort};

use super::{AppState, Tag, auth::FeedAuth, error::ApiError};

/// Largest page.
pub const MAX_LIMIT: i64 = 1000;
const DEFAULT_LIMIT: i64 = 100;

#[derive(Object, Default)]
pub struct Paging {
    /// `updated_at` (every change, oldest first) or empty (creations, oldest first).
    pub sort: Option<String>,
    /// 1 to 1000; 100 when absent.
    pub limit: Option<i64>,
    /// A `next` (or `prev`) cursor from an earlier answer.
    pub after: Option<String>,
}

#[derive(Object, Default)]
pub struct ListRequest {
    #[oai(default)]
    pub paging: Paging,
}

async fn list(
    state: &AppState,
    auth: &FeedAuth,
    entity: &str,
    plural: &str,
    request: ListRequest,
) -> Result<Json<Value>, ApiError> {
    let paging = request.paging;
    let tenant = auth.0.tenant_id;
    let limit = paging.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "paging.limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let requested = match paging.sort.as_deref() {
        None | Some("") => Sort::CreatedAt,
        Some("updated_at") => Sort::UpdatedAt,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "paging.sort `{other}` is not `updated_at` or empty"
            )));
        }
    };
    let key = state.cursor_key().await?;
    let (sort, after) = match paging.after.as_deref() {
        Some(cursor) => key
            .decode(cursor, tenant, entity)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => (requested, Position::default()),
    };
    let mut conn = state.pool.acquire().await?;
    let (entries, next) =
        feed::page(&mut conn, tenant, &[entity.to_owned()], sort, after, limit).await?;
    let items: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut item = match e.latest {
                Value::Object(map) => map,
                other => Map::from_iter([("value".to_owned(), other)]),
            };
            item.insert("id".into(), Value::String(e.entity_id));
            item.insert("updated_at".into(), json!(e.changed_at));
            item.insert("change_type".into(), Value::String(e.change_type));
            Value::Object(item)
        })
        .collect();
    Ok(Json(json!({
        plural: items,
        "paging": {
            "next": key.encode(tenant, entity, sort, next),
            "prev": key.encode(tenant, entity, sort, after),
        }
    })))
}

pub struct FeedApi;

/// Each entity's list call. The answer is `{"<entities>": [...], "paging": {"next",
/// "prev"}}`; items carry the entity's latest state with `id`, `updated_at` and
/// `change_type` (`create`, `update` or `delete`).
#[OpenApi(tag = "Tag::Feed")]
impl FeedApi {
    /// Products (from Ergonode), as `products`.
    #[oai(path = "/v1/shop.Product/ListProducts", method = "post")]
    async fn products(
        &self,
        auth: FeedAuth,
        state: Data<&AppState>,
        body: Json<ListRequest>,
    ) -> Result<Json<Value>, ApiError> {
        list(&state, &auth, "product", "products", body.0).await
    }

    /// Categories (from Ergonode), as `categories`.
    #[oai(path = "/v1/shop.Category/ListCategories", method = "post")]
    async fn categories(
        &self,
        auth: FeedAuth,
        state: Data<&AppState>,
        body: Json<ListRequest>,
    ) -> Result<Json<Value>, ApiError> {
        list(&state, &auth, "category", "categories", body.0).await
    }

    /// Attributes (from Ergonode), as `attributes`.
    #[oai(path = "/v1/shop.Attribute/ListAttributes", method = "post")]
    async fn attributes(
        &self,
        auth: FeedAuth,
        state: Data<&AppState>,
        body: Json<ListRequest>,
    ) -> Result<Json<Value>, ApiError> {
        list(&state, &auth, "attribute", "attributes", body.0).await
    }

    /// Favourites (IMSHOP / Conference Compass), as `favourites`.
    #[oai(path = "/v1/shop.Favourite/ListFavourites", method = "post")]
    async fn favourites(
        &self,
        auth: FeedAuth,
        state: Data<&AppState>,
        body: Json<ListRequest>,
    ) -> Result<Json<Value>, ApiError> {
        list(&state, &auth, "favourite", "favourites", body.0).await
    }

    /// Reservations (ALLIO), as `reservations`.
    #[oai(path = "/v1/shop.Reservation/ListReservations", method = "post")]
    async fn reservations(
        &self,
        auth: FeedAuth,
        state: Data<&AppState>,
        body: Json<ListRequest>,
    ) -> Result<Json<Value>, ApiError> {
        list(&state, &auth, "reservation", "reservations", body.0).await
    }

    /// Deals (ALLIO), as `deals`.
    #[oai(path = "/v1/shop.Deal/ListDeals", method = "post")]
    async fn deals(
        &self,
        auth: FeedAuth,
        state: Data<&AppState>,
        body: Json<ListRequest>,
    ) -> Result<Json<Value>, ApiError> {
        list(&state, &auth, "deal", "deals", body.0).await
    }

    /// Contacts (ALLIO), as `contacts`.
    #[oai(path = "/v1/shop.Contact/ListContacts", method = "post")]
    async fn contacts(
        &self,
        auth: FeedAuth,
        state: Data<&AppState>,
        body: Json<ListRequest>,
    ) -> Result<Json<Value>, ApiError> {
        list(&state, &auth, "contact", "contacts", body.0).await
    }
}
