//! The Switchboard gateway: the WebSocket edge.
//!
//! Folders by concept, in the order a connection meets them:
//!
//! - [`edge`]: the HTTP listener, admission (connection caps, handshake
//!   rate, the budget of failed authentications) and the demo page.
//! - [`websocket`]: the gateway's own WebSocket layer: the upgrade, a frame
//!   reader and writer, the socket that drives both with the heartbeat
//!   clocks, and the conformance echo.
//! - [`sse`]: the same protocol as server-sent events with ops POSTed to any
//!   gateway, for clients whose network breaks WebSockets; [`transport`] is
//!   the seam the session drives either through.
//! - [`session`]: one client connection: authentication, then one module
//!   per op family in [`session::ops`].
//! - [`delivery`]: how events reach connections: the bounded outbox of each,
//!   one fanout state machine per locally joined room, per-user topics.
//! - [`node`]: the gateway as a cluster member: the backends it reaches
//!   (standalone or cluster), the shared hub, the admin API, drain, start-up.
//! - [`cmd`]: what the binary does instead of serving (`gateway token`).

pub mod bucket;
pub mod cmd;
pub mod config;
pub mod delivery;
pub mod edge;
pub mod hooks;
pub mod metrics;
pub mod node;
pub mod session;
pub mod sse;
pub mod transport;
pub mod websocket;

/// The generated `GatewayAdmin` gRPC service (server and client) over `proto`'s messages.
pub mod rpc {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("switchboard.v1");
}
