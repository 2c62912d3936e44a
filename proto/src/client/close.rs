//! WebSocket close codes of the client protocol.
//!
//! Codes below 4500 mean "reconnect with backoff"; 4500 and above mean "do
//! not reconnect with these credentials".

/// Normal closure (the client asked, or an admin disconnect).
pub const NORMAL: u16 = 1000;
/// Going away: the gateway is draining; reconnect elsewhere.
pub const GOING_AWAY: u16 = 1001;
/// Protocol error in the WebSocket framing.
pub const PROTOCOL_ERROR: u16 = 1002;
/// A binary frame on the JSON subprotocol or text on the protobuf one.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Invalid UTF-8 in a text frame.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Never sent: marks a connection that ended without a close frame.
pub const ABNORMAL: u16 = 1006;
/// Policy violation (origin not allowed).
pub const POLICY: u16 = 1008;
/// Message too big (over the cap after reassembly).
pub const TOO_BIG: u16 = 1009;
/// Internal server error.
pub const INTERNAL: u16 = 1011;
/// Try again later (connection limit, handshake admission).
pub const TRY_AGAIN_LATER: u16 = 1013;
/// The client did not read fast enough; its queue overflowed.
pub const SLOW_CONSUMER: u16 = 4000;
/// No pong or other traffic after a ping.
pub const HEARTBEAT_TIMEOUT: u16 = 4001;
/// Sustained frames past the rate limit.
pub const FLOODING: u16 = 4002;
/// Missing, forged or otherwise invalid token.
pub const UNAUTHORIZED: u16 = 4500;
/// The token expired.
pub const TOKEN_EXPIRED: u16 = 4501;
/// The token does not allow this connection.
pub const FORBIDDEN: u16 = 4502;
/// Repeated bad frames.
pub const BAD_FRAMES: u16 = 4503;

/// Whether a client should reconnect after this code.
pub fn should_reconnect(code: u16) -> bool {
    code < 4500
}
