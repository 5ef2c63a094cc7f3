//! Partner simulators: real HTTP servers speaking a partner's protocol, for tests,
//! benchmarks and trying syncline out by hand (`syncline simulate ...`).

pub mod allio;
pub mod cc;

use std::net::SocketAddr;

use poem::listener::TcpAcceptor;

/// A free loopback port for a simulator, and its base URL.
async fn bind_loopback() -> std::io::Result<(TcpAcceptor, String)> {
    let (acceptor, addr) = crate::hub::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(std::io::Error::other)?;
    Ok((acceptor, format!("http://{addr}")))
}
