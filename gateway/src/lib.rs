//! The Switchboard gateway: the WebSocket edge.
//!
//! A connection is upgraded ([`handshake`]), authenticated and served by a
//! [`session`] in one task: its [`socket`] reads with the gateway's own frame
//! [`reader`], writes what fanout put in a bounded [`outbox`] with a
//! [`writer`], and keeps the heartbeat and expiry [`clock`]s. Room operations go to the
//! room's owner; events come back through one [`fanout`] task per locally
//! joined room ([`rooms`]) and per-user [`topics`]. Everything a connection
//! shares lives in the [`hub`].

pub mod admission;
pub mod auth;
pub mod backends;
pub mod bucket;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod drain;
pub mod echo;
pub mod fanout;
pub mod glob;
pub mod handshake;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod reader;
pub mod rooms;
pub mod server;
pub mod session;
pub mod socket;
pub mod topics;
pub mod writer;

/// The generated `GatewayAdmin` gRPC service (server and client) over `proto`'s messages.
pub mod rpc {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("switchboard.v1");
}
