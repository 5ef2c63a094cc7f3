//! ALLIO webhook intake: `POST /allio/webhook/{token}`. Stores the webhook row and queues
//! `allio.ingest` in one transaction, and does nothing else (no ALLIO calls).

use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};
use sqlx::Connection;
use syncline_domain::allio::{
    intake::{self, IntakeError, Webhook},
    settings::{self, Settings},
};
use syncline_jobs::{
    allio_ingest::Ingest,
    core::{EnqueueOptions, enqueue_deferred},
};

use super::{
    AppState, Tag,
    error::ApiError,
    strict::{self, JsonString},
};
use crate::tenancy::{self, IntegrationKind};

#[derive(Object)]
pub struct AllioWebhook {
    /// Must equal the integration's `integration_uuid`.
    pub uuid: JsonString,
    /// E.g. `RESERVE_ADD`, `DEALCARD_DEL`, `SPACE_CHANGED` (stored and ignored).
    pub command: JsonString,
    /// ALLIO ids the event is about (integers, at most 10 000).
    pub indexes: Vec<i64>,
}

#[derive(Object)]
pub struct Accepted {
    /// The stored `allio_webhook` row.
    pub webhook_id: i64,
}

impl AllioWebhook {
    fn validate(self, settings: &Settings) -> Result<Webhook, IntakeError> {
        Webhook::validate(
            settings,
            self.uuid.as_str(),
            self.command.as_str(),
            self.indexes,
        )
    }
}

/// An ALLIO webhook body as the route reads it for an integration with `settings` (JSON,
/// the schema, then the intake rules); `None` where the route answers 4xx. A pure entry
/// point for fuzzing.
pub fn allio_webhook_from_json(body: &[u8], settings: &Settings) -> Option<Webhook> {
    strict::parse_body::<AllioWebhook>(body)?
        .validate(settings)
        .ok()
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Inactive => ApiError::forbidden(e.to_string()),
            IntakeError::UuidMismatch | IntakeError::Invalid(_) => {
                ApiError::bad_request(e.to_string())
            }
        }
    }
}

pub struct AllioApi;

#[OpenApi(tag = "Tag::Allio")]
impl AllioApi {
    /// Receive an ALLIO webhook. The token in the path identifies the integration.
    #[oai(path = "/allio/webhook/:token", method = "post")]
    async fn webhook(
        &self,
        state: Data<&AppState>,
        token: Path<String>,
        body: Json<AllioWebhook>,
    ) -> Result<Json<Accepted>, ApiError> {
        let unknown = || ApiError::not_found("no ALLIO integration at this URL");
        // One connection for the whole request; the transaction opens only once the
        // webhook is known to be valid.
        let mut conn = state.pool.acquire().await?;
        let principal = tenancy::authenticate(&mut *conn, &token.0)
            .await?
            .filter(|p| p.kind == IntegrationKind::Allio)
            .ok_or_else(unknown)?;
        let settings = settings::load(&mut conn, principal.integration_id)
            .await?
            .ok_or_else(unknown)?;
        let webhook = body.0.validate(&settings)?;
        let mut tx = conn.begin().await?;
        let webhook_id = intake::store(&mut tx, &settings, &webhook).await?;
        let (_, wakeup) =
            enqueue_deferred(&mut tx, &Ingest { webhook_id }, EnqueueOptions::default()).await?;
        tx.commit().await?;
        wakeup.send(&state.notifier);
        Ok(Json(Accepted { webhook_id }))
    }
}
