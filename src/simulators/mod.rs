//! Partner simulators: real HTTP servers speaking a partner's protocol, for tests,
//! benchmarks and trying syncline out by hand (`syncline simulate ...`).

pub mod allio;
pub mod cc;
