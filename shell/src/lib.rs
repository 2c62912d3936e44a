//! The process shell every Switchboard binary shares.
//!
//! What makes `gateway`, `router` and `presence` behave alike as processes,
//! whatever they do inside: the command line and its conventions ([`cli`]),
//! logs and the metrics recorder ([`telemetry`]), freed memory given back
//! ([`heap`]), the admin endpoint with
//! `/metrics`, `/healthz` and `/readyz` ([`admin`]), how a gRPC API is
//! served and guarded by its bearer token ([`grpc`]), and how they talk to
//! the application's backend: the HTTP client ([`http`]), request
//! signatures ([`signature`]) and webhooks ([`webhook`]).

pub mod admin;
pub mod cli;
pub mod grpc;
pub mod heap;
pub mod http;
pub mod signature;
pub mod telemetry;
pub mod tls;
pub mod webhook;
