//! Client protocol v1: what a WebSocket client sends and receives.
//!
//! Two encodings with one meaning: JSON text frames (`switchboard.v1.json`,
//! the default) and protobuf binary frames (`switchboard.v1.proto`). Client
//! frames decode into one [`Request`] type and server frames encode from one
//! [`Event`] type, so the gateway never branches on the encoding.

pub mod close;
mod error;
mod event;
mod json;
mod op;

pub use error::ErrorCode;
pub use event::{status_or_online, Event, ReplyBody, SseHello};
pub use op::{DecodeError, Op, Request, RequestId, MAX_IDEMPOTENCY_KEY, MAX_USERS_PER_REQUEST};

/// Largest `data` of a message (room or direct), from a client or a backend:
/// 64 KiB. A client that raised `--max-message-bytes` past it gets
/// `too_large` for a bigger one; the bus never carries more.
pub const MAX_DATA_BYTES: usize = 64 * 1024;

/// Subprotocol name of the JSON encoding.
pub const JSON_PROTOCOL: &str = "switchboard.v1.json";
/// Subprotocol name of the protobuf encoding.
pub const PROTO_PROTOCOL: &str = "switchboard.v1.proto";

/// How a connection's frames are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// One JSON object per text frame.
    Json,
    /// One protobuf message per binary frame.
    Proto,
}

impl Encoding {
    /// The encoding for an offered subprotocol name, if it is one of ours.
    pub fn from_protocol(name: &str) -> Option<Self> {
        match name {
            JSON_PROTOCOL => Some(Self::Json),
            PROTO_PROTOCOL => Some(Self::Proto),
            _ => None,
        }
    }

    /// The subprotocol name.
    pub fn protocol(self) -> &'static str {
        match self {
            Self::Json => JSON_PROTOCOL,
            Self::Proto => PROTO_PROTOCOL,
        }
    }

    /// Whether frames of this encoding are binary WebSocket frames.
    pub fn is_binary(self) -> bool {
        self == Self::Proto
    }
}
