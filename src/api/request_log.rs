//! One span and one log line per request: method, route, status and duration. The route
//! is the pattern the router matched (as the metrics count it), never the URI: an ALLIO
//! webhook URL carries its integration's token, and poem's own `Tracing` middleware
//! would log it with every request.

use std::time::Instant;

use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::Instrument;

use super::metrics::route_of;

pub async fn log_request<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let span = tracing::info_span!(
        "request",
        remote_addr = %req.remote_addr(),
        method = %req.method(),
        route = tracing::field::Empty,
    );
    async move {
        let started = Instant::now();
        let resp = next.call(req).await?.into_response();
        tracing::Span::current().record("route", route_of(&resp));
        tracing::info!(status = resp.status().as_u16(), duration = ?started.elapsed(), "response");
        Ok(resp)
    }
    .instrument(span)
    .await
}
