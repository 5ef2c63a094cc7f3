//! syncline: a durable integration hub. One binary; the API validates, stores and
//! enqueues, the workers run typed, retriable jobs on Postgres.

pub mod api;
pub mod app_token;
pub mod config;
pub mod db;
pub mod hub;
pub mod job_ops;
pub mod secrets;
pub mod simulators;
pub mod tenancy;
