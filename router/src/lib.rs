//! Routers own rooms.
//!
//! Each room has exactly one owner, chosen by consistent hashing of the room
//! id over the live routers ([`ring`], [`membership`]). The owner orders the
//! room's messages, keeps its history and members ([`room`], [`history`]) and
//! fans its events out ([`owner`]), applying the policy of the room's
//! [`namespace`] (history bounds, join/leave events as they come or in a
//! [`batch`] per window, a member cap). [`client`] is how everyone else reaches an
//! owner, and [`api`] is the server API backends call (HTTP/JSON and gRPC),
//! which reaches gateways it learns of from [`gateways`]. Rooms live in the
//! owner's memory or, beyond it, in a [`store`] (NATS JetStream). The same code runs
//! inside `gateway --standalone` over the in-process broker and as the
//! `router` binary over NATS.

pub mod api;
pub mod batch;
pub mod client;
pub mod gateways;
pub mod history;
pub mod metrics;
pub mod namespace;
pub mod node;
pub mod owner;
pub mod reads;
pub mod room;
pub mod store;
mod store_jetstream;
mod store_memory;

pub use bus::{announce, membership, ring};

/// The generated `Rooms` gRPC service (server and client) over `proto`'s messages.
pub mod rpc {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("switchboard.v1");
}
