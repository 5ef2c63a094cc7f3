//! syncline's domain: the stores and protocol rules that the API handlers and the jobs
//! share. Functions take the caller's connection (normally its transaction) so the
//! caller can enqueue follow-up jobs in the same commit.

pub mod allio;
pub mod catalog;
pub mod change_log;
pub mod favourites;
pub mod feed;
pub mod webhooks;
