//! `GET /metrics` in Prometheus text format: jobs by queue and status and the age of the
//! oldest due job (read from the database at scrape time), plus this process's counters
//! (attempt outcomes, job durations, outbound calls, rate-limiter waits, HTTP requests).
//! The API serves it, and so does a `work` process given `SYNCLINE_METRICS_ADDR`
//! ([`only_metrics`]), so every process's counters can be scraped.

use std::fmt::Write;

use poem::{
    Endpoint, EndpointExt, IntoResponse, PathPattern, Request, Response, Route, handler,
    http::StatusCode, web::Data,
};
use sqlx::PgPool;
use syncline_jobs::core::metrics;

use crate::job_ops;

#[handler]
pub async fn render(pool: Data<&PgPool>) -> Response {
    let mut out = String::new();
    match job_ops::stats(&pool).await {
        Ok(queues) => {
            let _ = writeln!(out, "# TYPE syncline_jobs gauge");
            for q in &queues {
                for (status, n) in &q.counts {
                    let _ = writeln!(
                        out,
                        "syncline_jobs{{queue=\"{}\",status=\"{status}\"}} {n}",
                        q.queue
                    );
                }
            }
            let _ = writeln!(out, "# TYPE syncline_queue_oldest_due_seconds gauge");
            for q in &queues {
                let _ = writeln!(
                    out,
                    "syncline_queue_oldest_due_seconds{{queue=\"{}\"}} {}",
                    q.queue,
                    q.oldest_due_secs.unwrap_or(0.0)
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics without job counts: database unavailable"),
    }
    out.push_str(&metrics::render());
    Response::builder()
        .status(StatusCode::OK)
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

/// An HTTP application serving `GET /metrics` and nothing else, for processes that serve
/// no API (`work`).
pub fn only_metrics(pool: PgPool) -> impl Endpoint {
    Route::new()
        .at("/metrics", poem::get(render))
        .around(super::error::render_any_error)
        .data(pool)
}

/// The route pattern poem matched for this answer (`/admin/jobs/:param0`), or
/// `unmatched`. Metrics labels and request logs use it rather than the path: the label
/// set stays bounded, and an ALLIO webhook path, which carries its integration's token,
/// never reaches a log or a scrape.
pub(super) fn route_of(resp: &Response) -> &str {
    match resp.data::<PathPattern>() {
        // A path under the API's `/` nest that no operation matched comes back empty.
        Some(PathPattern(pattern)) if !pattern.is_empty() => pattern,
        _ => "unmatched",
    }
}

/// Counts every request by method, route and status. It runs outside
/// [`super::error::render_any_error`], so every outcome is an answer here.
pub async fn count_requests<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let method = req.method().to_string();
    let resp = next.call(req).await?.into_response();
    metrics::http(&method, route_of(&resp), resp.status().as_u16());
    Ok(resp)
}
