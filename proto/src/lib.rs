//! The contract shared by every Switchboard process.
//!
//! Everything two processes must agree on lives here, so that a gateway, a
//! router and a presence service built from the same tree can never disagree
//! on a wire format: the protobuf types ([`pb`]), the client protocol in both
//! encodings ([`client`]), bus subject names and id rules ([`subject`]), the
//! broker that carries bus messages ([`bus`]), and the operator-facing admin
//! endpoint, telemetry and command-line conventions every binary shares
//! ([`admin`], [`telemetry`], [`cli`], [`grpc`]).

pub mod admin;
pub mod bus;
pub mod cli;
pub mod client;
pub mod grpc;
pub mod subject;
pub mod telemetry;

/// Generated protobuf and gRPC types (`proto/switchboard/v1/*.proto`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("switchboard.v1");
}

/// Milliseconds since the Unix epoch: the `ts` of every event.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
