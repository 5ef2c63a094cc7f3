//! Webhook subscriptions of the changes feed, eShip style:
//! `POST /v1/shop.Webhook/CreateWebhook`, `GetWebhooks`, `DeleteWebhook` (feed key).

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{Object, OpenApi, payload::Json};
use serde_json::Value;
use syncline_domain::webhooks::{self, Webhook, WebhookError};

use super::{
    AppState, Tag, admin_sources::parse_http_url, auth::FeedAuth, error::ApiError,
    strict::JsonString,
};

/// Entities a webhook may subscribe to (the changes feed's).
pub const ENTITIES: [&str; 7] = [
    "product",
    "category",
    "attribute",
    "favourite",
    "reservation",
    "deal",
    "contact",
];

#[derive(Object)]
pub struct CreateWebhookRequest {
    /// http(s) URL without credentials; put a secret token in it if you like.
    pub url: JsonString,
    /// Any of `product`, `category`, `attribute`, `favourite`, `reservation`, `deal`, `contact`.
    pub entities: Vec<JsonString>,
    #[oai(default)]
    pub fields: Vec<JsonString>,
    #[oai(default)]
    pub metadata: Option<JsonString>,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LastError {
    pub error: String,
    pub resp_status: i64,
    pub resp_body: String,
    pub retried: i64,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct States {
    /// `ok`, `retry` or `stop`.
    pub state: String,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<LastError>,
}

#[derive(Object)]
pub struct WebhookView {
    pub id: String,
    pub entities: Vec<String>,
    pub fields: Vec<String>,
    pub url: String,
    pub metadata: String,
    pub created_at: DateTime<Utc>,
    pub states: States,
}

#[derive(Object)]
pub struct CreatedWebhook {
    #[oai(flatten)]
    pub webhook: WebhookView,
    /// Standard Webhooks signing secret; shown only in this answer.
    pub secret: String,
}

#[derive(Object)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

#[derive(Object, Default)]
pub struct Empty {}

#[derive(Object)]
pub struct WebhookId {
    pub id: JsonString,
}

fn last_error(value: Option<Value>) -> Option<LastError> {
    let v = value?;
    Some(LastError {
        error: v["error"].as_str().unwrap_or_default().to_owned(),
        resp_status: v["resp_status"].as_i64().unwrap_or(0),
        resp_body: v["resp_body"].as_str().unwrap_or_default().to_owned(),
        retried: v["retried"].as_i64().unwrap_or(0),
        sent_at: v["sent_at"].as_str().and_then(|s| s.parse().ok()),
    })
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id.to_string(),
            entities: w.entities,
            fields: w.fields,
            url: w.url,
            metadata: w.metadata,
            created_at: w.created_at,
            states: States {
                state: w.state,
                last_sent_at: w.last_sent_at,
                last_error: last_error(w.last_error),
            },
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::TooMany => ApiError::bad_request(e.to_string()),
            WebhookError::Database(e) => e.into(),
        }
    }
}

fn strings(list: &[JsonString]) -> Vec<String> {
    list.iter().map(|s| s.as_str().to_owned()).collect()
}

pub struct WebhooksApi;

#[OpenApi(tag = "Tag::Feed")]
impl WebhooksApi {
    /// Register a webhook: changes committed from now on are POSTed to `url`, signed
    /// (`webhook-id`, `webhook-timestamp`, `webhook-signature`). Answer `ok` with HTTP 200.
    #[oai(path = "/v1/shop.Webhook/CreateWebhook", method = "post")]
    async fn create(
        &self,
        auth: FeedAuth,
        state: Data<&AppState>,
        body: Json<CreateWebhookRequest>,
    ) -> Result<Json<CreatedWebhook>, ApiError> {
        let url = parse_http_url(body.url.as_str())?;
        let entities = strings(&body.entities);
        if entities.is_empty() || entities.iter().any(|e| !ENTITIES.contains(&e.as_str())) {
            return Err(ApiError::bad_request(format!(
                "entities must be some of {}",
                ENTITIES.join(", ")
            )));
        }
        let metadata = body
            .metadata
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        if metadata.len() > 1000 || body.fields.len() > 100 {
            return Err(ApiError::bad_request(
                "metadata is at most 1000 bytes and fields at most 100",
            ));
        }
        let mut tx = state.pool.begin().await?;
        let (webhook, secret) = webhooks::create(
            &mut tx,
            auth.0.tenant_id,
            url.as_str(),
            &entities,
            &strings(&body.fields),
            &metadata,
        )
        .await?;
        tx.commit().await?;
        Ok(Json(CreatedWebhook {
            webhook: webhook.into(),
            secret,
        }))
    }

    /// The tenant's webhooks with their delivery state.
    #[oai(path = "/v1/shop.Webhook/GetWebhooks", method = "post")]
    async fn list(
        &self,
        auth: FeedAuth,
        state: Data<&AppState>,
        _body: Json<Empty>,
    ) -> Result<Json<WebhookList>, ApiError> {
        let mut conn = state.pool.acquire().await?;
        let list = webhooks::list(&mut conn, auth.0.tenant_id).await?;
        Ok(Json(WebhookList {
            webhooks: list.into_iter().map(Into::into).collect(),
        }))
    }

    /// Delete a webhook; it receives nothing more. Re-create it to start over.
    #[oai(path = "/v1/shop.Webhook/DeleteWebhook", method = "post")]
    async fn delete(
        &self,
        auth: FeedAuth,
        state: Data<&AppState>,
        body: Json<WebhookId>,
    ) -> Result<Json<Empty>, ApiError> {
        let id: i64 = body
            .id
            .as_str()
            .parse()
            .map_err(|_| ApiError::not_found("no such webhook"))?;
        let mut conn = state.pool.acquire().await?;
        if !webhooks::delete(&mut conn, auth.0.tenant_id, id).await? {
            return Err(ApiError::not_found("no such webhook"));
        }
        Ok(Json(Empty::default()))
    }
}
