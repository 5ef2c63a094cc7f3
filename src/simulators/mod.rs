//! Partner simulators: real HTTP servers speaking a partner's protocol, for tests,
//! benchmarks and trying syncline out by hand (`syncline simulate ...`).

pub mod allio;
pub mod cc;

use std::net::SocketAddr;

use poem::{IntoResponse, Response, http::StatusCode, listener::TcpAcceptor};
use serde::Deserialize;

/// Control body shared by the simulators: the next `times` answers fail with `status`.
#[derive(Deserialize)]
pub struct FailNext {
    pub status: u16,
    pub times: usize,
}

impl FailNext {
    /// Hands a valid request to `inject` and answers 204; answers 400 otherwise.
    pub fn apply(&self, inject: impl FnOnce(StatusCode, usize)) -> Response {
        match StatusCode::from_u16(self.status) {
            Ok(status) if self.times <= 1000 => {
                inject(status, self.times);
                StatusCode::NO_CONTENT.into_response()
            }
            _ => (
                StatusCode::BAD_REQUEST,
                "status must be an HTTP status, times ≤ 1000",
            )
                .into_response(),
        }
    }
}

/// A free loopback port for a simulator, and its base URL.
async fn bind_loopback() -> std::io::Result<(TcpAcceptor, String)> {
    let (acceptor, addr) = crate::hub::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(std::io::Error::other)?;
    Ok((acceptor, format!("http://{addr}")))
}
