//! Liveness and readiness probes.

use std::time::Duration;

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::{AppState, Tag};

#[derive(Object)]
pub struct Health {
    pub status: String,
}

#[derive(ApiResponse)]
pub enum Readiness {
    /// The database answers.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// The database does not answer within a second.
    #[oai(status = 503)]
    NotReady(Json<Health>),
}

pub struct HealthApi;

#[OpenApi(tag = "Tag::Health")]
impl HealthApi {
    /// The process is up.
    #[oai(path = "/healthz", method = "get")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// The process can reach its database.
    #[oai(path = "/readyz", method = "get")]
    async fn readyz(&self, state: Data<&AppState>) -> Readiness {
        let ping = sqlx::query("SELECT 1").execute(&state.pool);
        match tokio::time::timeout(Duration::from_secs(1), ping).await {
            Ok(Ok(_)) => Readiness::Ready(Json(Health {
                status: "ready".into(),
            })),
            _ => Readiness::NotReady(Json(Health {
                status: "database unreachable".into(),
            })),
        }
    }
}
