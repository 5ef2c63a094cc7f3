//! One span and one log line per request: method, route, status and duration. The route
//! is the path with ids and tokens folded out (as the metrics count it), never the full
//! URI: an ALLIO webhook URL carries its integration's token, and poem's own `Tracing`
//! middleware would log it with every request.

use std::time::Instant;

use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::Instrument;

use super::metrics::route_of;

pub async fn log_request<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let span = tracing::info_span!(
        "request",
        remote_addr = %req.remote_addr(),
        method = %req.method(),
        route = %route_of(req.uri().path()),
    );
    async move {
        let started = Instant::now();
        let result = next.call(req).await.map(IntoResponse::into_response);
        let status = match &result {
            Ok(resp) => resp.status(),
            Err(e) => e.status(),
        };
        tracing::info!(status = status.as_u16(), duration = ?started.elapsed(), "response");
        result
    }
    .instrument(span)
    .await
}
