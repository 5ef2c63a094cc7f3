//! `GET /metrics` in Prometheus text format: jobs by queue and status and the age of the
//! oldest due job (read from the database at scrape time), plus this process's counters
//! (attempt outcomes, job durations, outbound calls, rate-limiter waits, HTTP requests).
//! The API serves it, and so does a `work` process given `SYNCLINE_METRICS_ADDR`
//! ([`only_metrics`]), so every process's counters can be scraped.

use std::fmt::Write;

use poem::{
    Endpoint, EndpointExt, IntoResponse, Request, Response, Route, handler, http::StatusCode,
    web::Data,
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
                    q.oldest_pending_secs.unwrap_or(0.0)
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

/// A path with its ids replaced, so routes stay few: `/admin/jobs/01H…` → `/admin/jobs/:id`.
pub(super) fn route_of(path: &str) -> String {
    let looks_like_id = |segment: &str| {
        segment.len() >= 16
            || segment.starts_with("sl_")
            || (!segment.is_empty() && segment.chars().all(|c| c.is_ascii_digit()))
    };
    path.split('/')
        .map(|segment| {
            if looks_like_id(segment) {
                ":id"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Counts every request by method, route and status.
pub async fn count_requests<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let method = req.method().to_string();
    let route = route_of(req.uri().path());
    let result = next.call(req).await.map(IntoResponse::into_response);
    let status = match &result {
        Ok(resp) => resp.status(),
        Err(e) => e.status(),
    };
    metrics::http(&method, &route, status.as_u16());
    result
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn ids_and_tokens_are_folded_out_of_routes() {
        assert_eq!(
            route_of("/admin/jobs/01M83YHZAQYGYPRJRY12FBF8M1"),
            "/admin/jobs/:id"
        );
        assert_eq!(route_of("/allio/webhook/sl_abc"), "/allio/webhook/:id");
        assert_eq!(
            route_of("/admin/webhooks/12/resume"),
            "/admin/webhooks/:id/resume"
        );
        assert_eq!(route_of("/healthz"), "/healthz");
    }
}
