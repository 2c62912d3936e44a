//! Presence: who is online, kept as TTL state fed by the gateways.
//!
//! Gateways report session deltas in batches and renew one lease each
//! ([`Reporter`]); the service ([`PresenceService`]) turns sessions into
//! online/offline changes with an offline grace ([`Store`]), answers
//! queries, streams changes to gRPC watchers and publishes them on
//! `sb.presence.<user>` for gateways with watching clients. A gateway reaches
//! the service through [`PresenceClient`], over gRPC in a cluster or
//! in-process in `gateway --standalone`. [`direct`] sends a direct message
//! to a user's connections or, when they have none, to their inbox.

mod client;
mod deadlines;
pub mod direct;
pub mod inbox;
mod inbox_jetstream;
mod inbox_memory;
mod located;
pub mod metrics;
mod replicas;
mod reporter;
mod service;
mod store;
mod users;
mod watch;

/// The generated `Presence` gRPC service (server and client) over `proto`'s messages.
pub mod rpc {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("switchboard.v1");
}

pub use client::{Dial, PresenceClient};
pub use inbox::{InboxConfig, InboxFlags, InboxStore, InboxStoreFlags};
pub use replicas::{Replicas, Target};
pub use reporter::{Reporter, ReporterConfig};
pub use service::{PresenceService, MAX_REPORT_BYTES, MAX_USERS_PER_REQUEST};
pub use store::{Change, Store, StoreConfig};
pub use users::LAST_SEEN_RETENTION;
pub use watch::WatchStream;
