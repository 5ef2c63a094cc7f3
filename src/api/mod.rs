//! The HTTP API: routes, the OpenAPI document, docs UI, and the error envelope.

mod admin;
mod admin_allio;
mod admin_ergonode;
mod admin_jobs;
mod admin_sources;
mod allio;
mod auth;
mod changes_feed;
mod dashboard;
mod ergonode;
mod error;
mod favourites;
mod health;
mod limits;
mod metrics;
mod request_log;
mod strict;
mod webhooks;
mod whoami;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApi, OpenApiService, Tags};
use std::sync::Arc;

use sqlx::PgPool;
use syncline_domain::feed::{self, CursorKey};
use syncline_jobs::core::Notifier;
use tokio::sync::OnceCell;

use crate::secrets::{self, TokenHash};

pub use allio::allio_webhook_from_json;
pub use favourites::imshop_request_from_json;
pub use metrics::only_metrics;

#[derive(Tags)]
enum Tag {
    /// Liveness and readiness.
    Health,
    /// Operator endpoints (admin token).
    Admin,
    /// Operator endpoints for jobs (admin token).
    Jobs,
    /// Endpoints partners call with their integration tokens.
    Partner,
    /// Favourites sync: IMSHOP and Conference Compass.
    Favourites,
    /// ALLIO webhooks.
    Allio,
    /// Ergonode App synchronization endpoints.
    Ergonode,
    /// Changes feed: cursor polling (feed API key).
    Feed,
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Sends the wake-ups of jobs enqueued by intake routes once they have committed.
    pub notifier: Notifier,
    admin_token_hash: TokenHash,
    /// Loaded from the database on first use.
    cursor_key: Arc<OnceCell<CursorKey>>,
}

impl AppState {
    pub fn new(pool: PgPool, admin_token: &str) -> Self {
        Self {
            notifier: Notifier::start(pool.clone()),
            pool,
            admin_token_hash: secrets::hash(admin_token),
            cursor_key: Arc::default(),
        }
    }

    /// Whether `token` is the admin token (constant-time).
    fn is_admin_token(&self, token: &str) -> bool {
        secrets::hashes_match(&secrets::hash(token), &self.admin_token_hash)
    }

    async fn cursor_key(&self) -> Result<&CursorKey, sqlx::Error> {
        self.cursor_key
            .get_or_try_init(|| async {
                let mut conn = self.pool.acquire().await?;
                feed::cursor_key(&mut conn).await
            })
            .await
    }
}

fn service() -> OpenApiService<impl OpenApi, ()> {
    OpenApiService::new(
        (
            health::HealthApi,
            admin::AdminApi,
            admin_sources::AdminSourcesApi,
            admin_allio::AdminAllioApi,
            admin_ergonode::AdminErgonodeApi,
            admin_jobs::AdminJobsApi,
            whoami::WhoamiApi,
            favourites::FavouritesApi,
            allio::AllioApi,
            ergonode::ErgonodeApi,
            changes_feed::FeedApi,
            webhooks::WebhooksApi,
        ),
        "syncline",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Durable integration hub: partner protocols over HTTP, typed retriable jobs on Postgres.",
    )
}

/// The OpenAPI document, exactly as served at `/openapi.json`.
pub fn openapi_json() -> String {
    service().spec()
}

/// The whole HTTP application.
pub fn app(state: AppState, max_body_bytes: usize) -> impl Endpoint {
    let api = service();
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .at("/metrics", poem::get(metrics::render))
        .at("/admin/", poem::get(dashboard::page))
        .at("/admin/ui/replay", poem::post(dashboard::replay))
        .around(move |next, req| limits::limit_body(next, req, max_body_bytes))
        .around(error::render_any_error)
        .around(metrics::count_requests)
        .data(state.pool.clone())
        .data(state)
        .around(request_log::log_request)
}
