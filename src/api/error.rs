//! The one error shape every 4xx/5xx carries: `{"code": "...", "message": "..."}`.

use poem::{Endpoint, IntoResponse, Request, Response, http::StatusCode};
use poem_openapi::{ApiResponse, Object, payload::Json};

use crate::tenancy::TenancyError;

#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Stable, machine-readable code (e.g. `invalid_request`, `unauthorized`).
    pub code: String,
    /// Human-readable explanation; may change between releases.
    pub message: String,
}

#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed or fails validation.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing or wrong credentials.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The caller may not do this now (e.g. the integration is inactive).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// The addressed resource does not exist.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with existing state.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The body is larger than the hub accepts (`SYNCLINE_MAX_BODY_BYTES`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json`, or has no `Content-Type`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// A dependency (the database) is unavailable; retry later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(code: &str, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        code: code.to_owned(),
        message: message.into(),
    })
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(body("invalid_request", message))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(body("not_found", message))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(body("forbidden", message))
    }

    pub fn unauthorized() -> Self {
        Self::Unauthorized(body("unauthorized", "missing or invalid credentials"))
    }
}

/// What a caller is told when the database fails it — unreachable, restarting, out of
/// connections or timed out — as `{code: "database_unavailable", message}`, with a 503
/// so partners retry later. The details go to the log, not the caller. Every route's
/// database errors end up here.
pub fn database_unavailable(e: &sqlx::Error) -> ErrorBody {
    tracing::error!(error = %e, "database error while serving a request");
    ErrorBody {
        code: "database_unavailable".into(),
        message: "the database is unavailable; try again later".into(),
    }
}

/// The database refused a value the caller sent (SQLSTATE class 22, "data exception":
/// text with a U+0000 character, a number out of range, ...): the caller's error, not
/// an outage.
fn refused_value(e: &sqlx::Error) -> Option<String> {
    let db = e.as_database_error()?;
    db.code()
        .is_some_and(|code| code.starts_with("22"))
        .then(|| format!("a value in the request cannot be stored: {}", db.message()))
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(message) = refused_value(&e) {
            return Self::bad_request(message);
        }
        Self::Unavailable(Json(database_unavailable(&e)))
    }
}

impl From<TenancyError> for ApiError {
    fn from(e: TenancyError) -> Self {
        match e {
            TenancyError::Invalid(m) => Self::bad_request(m),
            TenancyError::NotFound(what) => Self::not_found(format!("{what} not found")),
            TenancyError::Conflict(m) => Self::Conflict(body("conflict", m)),
            TenancyError::Database(e) => e.into(),
        }
    }
}

impl From<syncline_jobs::core::EnqueueError> for ApiError {
    fn from(e: syncline_jobs::core::EnqueueError) -> Self {
        match e {
            syncline_jobs::core::EnqueueError::Database(e) => e.into(),
            other => {
                tracing::error!(error = %other, "could not enqueue a job");
                Self::Unavailable(body("unavailable", "could not enqueue the job"))
            }
        }
    }
}

/// The stable code for a status that did not come from our own handlers.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "invalid_request",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal",
    }
}

/// Rewrites any error that is not already our JSON body (routing misses, payload parse
/// failures, auth rejections from the framework) into it, keeping its status.
pub async fn render_any_error<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    match next.call(req).await {
        Ok(resp) => Ok(resp.into_response()),
        Err(err) => {
            let message = err.to_string();
            let mut resp = err.into_response();
            let is_json = resp
                .content_type()
                .is_some_and(|ct| ct.starts_with("application/json"));
            if is_json {
                return Ok(resp);
            }
            let status = resp.status();
            let message = if status.is_server_error() {
                tracing::error!(%status, error = %message, "request failed");
                "internal error".to_owned()
            } else {
                message
            };
            let mut rendered = body(code_for(status), message)
                .with_status(status)
                .into_response();
            // Keeps what the router noted (the matched route pattern) for the metrics.
            *rendered.extensions_mut() = std::mem::take(resp.extensions_mut());
            Ok(rendered)
        }
    }
}
