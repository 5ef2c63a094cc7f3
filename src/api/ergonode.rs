//! Ergonode App synchronization endpoints: `PUT /ergonode/{integration}/consume/{event}`
//! (configure the App's base URL in Ergonode as `<our URL>/ergonode/<integration id>`).
//! Each call carries `X-APP-TOKEN` (HS256 JWT with a `synchronization_id` claim).
//! Resource events queue `ergonode.apply`; created/updated answer our stable id as
//! `resource_customs.id`. Errors use Ergonode's `{custom_message, retryable}` (with our
//! `code` and `message` beside them).

use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path},
    payload::Json,
};
use serde_json::Value;
use sqlx::PgConnection;
use syncline_domain::catalog::{self, Kind};
use syncline_jobs::{
    core::{EnqueueOptions, enqueue_deferred},
    ergonode_apply::Apply,
};
use uuid::Uuid;

use super::{
    AppState, Tag,
    error::{ErrorBody, database_unavailable},
    strict::{self, JsonString},
};
use crate::{app_token, tenancy::IntegrationKind};

#[derive(Object)]
pub struct ResourceRef {
    pub id: JsonString,
    #[oai(rename = "type")]
    pub kind: JsonString,
}

#[derive(Object)]
pub struct Synchronization {
    pub resource_customs: Option<Value>,
    #[oai(default)]
    pub events: Vec<Value>,
}

#[derive(Object)]
pub struct ConsumeBody {
    /// The event name (the path is authoritative).
    pub name: Option<JsonString>,
    pub resource_id: Option<ResourceRef>,
    pub synchronization: Option<Synchronization>,
}

#[derive(Object)]
pub struct ResourceCustoms {
    /// Stored by Ergonode and sent back with later events; `id` is ours.
    pub resource_customs: std::collections::BTreeMap<String, Value>,
}

#[derive(Object)]
pub struct ErgonodeError {
    pub code: String,
    pub message: String,
    /// At most 256 characters.
    pub custom_message: String,
    pub retryable: bool,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "unreadable")]
pub enum Consumed {
    /// Created/updated: keep these resource customs.
    #[oai(status = 200)]
    Customs(Json<ResourceCustoms>),
    /// Deleted and synchronization events.
    #[oai(status = 204)]
    Done,
    #[oai(status = 400)]
    BadRequest(Json<ErgonodeError>),
    #[oai(status = 401)]
    Unauthorized(Json<ErgonodeError>),
    #[oai(status = 404)]
    NotFound(Json<ErgonodeError>),
    /// Temporary: retry.
    #[oai(status = 503)]
    Unavailable(Json<ErgonodeError>),
}

fn error(code: &str, message: impl Into<String>, retryable: bool) -> Json<ErgonodeError> {
    let message: String = message.into();
    Json(ErgonodeError {
        code: code.into(),
        custom_message: message.chars().take(256).collect(),
        message,
        retryable,
    })
}

fn unreadable(e: poem::Error) -> Consumed {
    Consumed::BadRequest(error("invalid_request", e.to_string(), false))
}

impl From<sqlx::Error> for Consumed {
    fn from(e: sqlx::Error) -> Self {
        let ErrorBody { code, message } = database_unavailable(&e);
        Consumed::Unavailable(error(&code, message, true))
    }
}

impl From<syncline_jobs::core::EnqueueError> for Consumed {
    fn from(e: syncline_jobs::core::EnqueueError) -> Self {
        if let syncline_jobs::core::EnqueueError::Database(e) = e {
            return e.into();
        }
        tracing::error!(error = %e, "could not enqueue an Ergonode event");
        Consumed::Unavailable(error(
            "unavailable",
            "could not queue the event; try again",
            true,
        ))
    }
}

/// What an event name means.
enum Event {
    Resource { kind: Kind, deleted: bool },
    SynchronizationStarted,
    SynchronizationEnded,
}

fn event(name: &str) -> Option<Event> {
    match name {
        "synchronization_started" => return Some(Event::SynchronizationStarted),
        "synchronization_ended" => return Some(Event::SynchronizationEnded),
        _ => {}
    }
    let (kind, action) = name.split_once('_')?;
    let kind = Kind::parse(kind)?;
    let deleted = match action {
        "created" | "updated" => false,
        "deleted" => true,
        _ => return None,
    };
    Some(Event::Resource { kind, deleted })
}

async fn secret(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT s.jwt_secret FROM ergonode_settings s JOIN integrations i ON i.id = s.integration_id
         WHERE s.integration_id = $1 AND i.kind = $2",
    )
    .bind(integration_id)
    .bind(IntegrationKind::Ergonode.as_str())
    .fetch_optional(conn)
    .await
}

pub struct ErgonodeApi;

#[OpenApi(tag = "Tag::Ergonode")]
impl ErgonodeApi {
    /// Consume one Ergonode synchronization event.
    #[oai(path = "/ergonode/:integration_id/consume/:event", method = "put")]
    async fn consume(
        &self,
        state: Data<&AppState>,
        integration_id: Path<Uuid>,
        #[oai(name = "event")] event_name: Path<String>,
        #[oai(name = "X-APP-TOKEN")] token: Header<Option<String>>,
        body: Json<ConsumeBody>,
    ) -> Consumed {
        match consume(
            &state,
            integration_id.0,
            &event_name.0,
            token.0.as_deref(),
            body.0,
        )
        .await
        {
            Ok(answer) | Err(answer) => answer,
        }
    }
}

async fn consume(
    state: &AppState,
    integration_id: Uuid,
    event_name: &str,
    token: Option<&str>,
    body: ConsumeBody,
) -> Result<Consumed, Consumed> {
    // One connection and no transaction: each statement below commits on its own. The
    // synchronization record and event number need no atomicity with the job (a retry
    // after a failure finds the record and takes a new number), and the job commits
    // before we answer, so an event costs three round trips.
    let mut conn = state.pool.acquire().await?;
    let secret = secret(&mut conn, integration_id).await?.ok_or_else(|| {
        Consumed::NotFound(error("not_found", "no Ergonode integration here", false))
    })?;
    let now = chrono::Utc::now().timestamp();
    let synchronization_id = token
        .ok_or(app_token::TokenError::Malformed)
        .and_then(|t| app_token::verify(t, secret.as_bytes(), now))
        .map_err(|e| {
            Consumed::Unauthorized(error(
                "unauthorized",
                format!("X-APP-TOKEN rejected: {e}"),
                false,
            ))
        })?;
    let event = event(event_name).ok_or_else(|| {
        Consumed::NotFound(error(
            "not_found",
            format!("unknown event `{event_name}`"),
            false,
        ))
    })?;

    match event {
        Event::SynchronizationStarted | Event::SynchronizationEnded => {
            let ended = matches!(event, Event::SynchronizationEnded);
            catalog::record_synchronization(&mut conn, integration_id, synchronization_id, ended)
                .await?;
            Ok(Consumed::Done)
        }
        Event::Resource { kind, deleted } => {
            let bad = |why: &str| Consumed::BadRequest(error("invalid_request", why, false));
            let resource = body
                .resource_id
                .ok_or_else(|| bad("resource_id is required"))?;
            let resource_id = resource.id.as_str().trim();
            if resource_id.is_empty() || resource_id.chars().count() > 255 {
                return Err(bad("resource_id.id must be 1 to 255 characters"));
            }
            let synchronization = body
                .synchronization
                .ok_or_else(|| bad("synchronization is required"))?;
            // The job stores these; a value Postgres refuses would fail it on every retry.
            let texts = [resource_id, resource.kind.as_str()].map(Value::from);
            if !texts
                .iter()
                .chain(&synchronization.events)
                .all(strict::storable)
            {
                return Err(bad("resource ids and events must not contain U+0000"));
            }
            let seq = catalog::accept_event(&mut conn, integration_id, synchronization_id).await?;
            let job = Apply {
                integration_id,
                synchronization_id,
                kind: kind.as_str().into(),
                resource_id: resource_id.to_owned(),
                resource_type: resource.kind.as_str().to_owned(),
                events: Value::Array(synchronization.events),
                deleted,
                seq,
            };
            // Autocommit: the job is committed when this returns.
            let (_, wakeup) = enqueue_deferred(&mut conn, &job, EnqueueOptions::default()).await?;
            wakeup.send(&state.notifier);
            if deleted {
                return Ok(Consumed::Done);
            }
            let mut customs: std::collections::BTreeMap<String, Value> =
                match synchronization.resource_customs {
                    Some(Value::Object(map)) => map.into_iter().collect(),
                    _ => Default::default(),
                };
            let ours = catalog::stable_id(integration_id, kind, resource_id);
            customs.insert("id".into(), Value::String(ours));
            Ok(Consumed::Customs(Json(ResourceCustoms {
                resource_customs: customs,
            })))
        }
    }
}
