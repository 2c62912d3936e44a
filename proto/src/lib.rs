//! The wire contract shared by every Switchboard process.
//!
//! Everything two processes must agree on lives here, so that a gateway, a
//! router and a presence service built from the same tree can never disagree
//! on a wire format: the protobuf messages of the client protocol and the
//! gRPC services ([`pb`], package `switchboard.v1`) and of the bus between
//! Switchboard's own processes ([`internal`], `switchboard.internal.v1`), the
//! client protocol in both encodings ([`client`]), and bus subject names and
//! id rules ([`subject`]). It holds no runtime: the bus is the `bus` crate,
//! the process shell the `shell` crate, and each gRPC service is generated
//! by the crate that serves it.

pub mod client;
pub mod permissions;
pub mod subject;

/// Messages of package `switchboard.v1` (`proto/switchboard/v1/*.proto`):
/// the client protocol and the gRPC services' calls and results.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/switchboard.v1.rs"));
}

/// Messages of package `switchboard.internal.v1`
/// (`proto/switchboard/internal/v1/bus.proto`): what gateways, routers and
/// presence say to each other on the bus.
pub mod internal {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/switchboard.internal.v1.rs"));
}

/// Milliseconds since the Unix epoch: the `ts` of every event.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
