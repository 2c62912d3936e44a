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

/// A close: the code, and a short reason for the close frame (at most 123
/// bytes; these are fixed strings, never client input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

impl Close {
    pub const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason }
    }

    /// The client closed, or we close normally.
    pub const BYE: Close = Close::new(NORMAL, "bye");
    /// The client vanished: nothing is sent.
    pub const GONE: Close = Close::new(ABNORMAL, "gone");
    pub const DRAINING: Close = Close::new(GOING_AWAY, "draining");
    pub const ORIGIN: Close = Close::new(POLICY, "origin not allowed");
    pub const TRY_AGAIN_LATER: Close = Close::new(TRY_AGAIN_LATER, "try again later");
    pub const SLOW_CONSUMER: Close = Close::new(SLOW_CONSUMER, "slow consumer");
    pub const HEARTBEAT_TIMEOUT: Close = Close::new(HEARTBEAT_TIMEOUT, "heartbeat timeout");
    pub const FLOODING: Close = Close::new(FLOODING, "flooding");
    pub const AUTH_TIMEOUT: Close = Close::new(UNAUTHORIZED, "auth timeout");
    pub const TOKEN_EXPIRED: Close = Close::new(TOKEN_EXPIRED, "token expired");
    pub const BAD_FRAMES: Close = Close::new(BAD_FRAMES, "repeated bad frames");
}

/// Close codes an operator or the application's backend may send: normal,
/// going away, policy, internal, try again later, and the application range.
pub fn operator_may_send(code: u16) -> bool {
    matches!(code, NORMAL | GOING_AWAY | POLICY | INTERNAL | TRY_AGAIN_LATER | 4000..=4999)
}

/// Longest close reason: a close frame's payload is at most 125 bytes.
pub const MAX_REASON_BYTES: usize = 123;

/// Distinct reasons [`app_reason`] keeps.
const MAX_APP_REASONS: usize = 256;

/// A close reason the application's backend chose (the server API's
/// `disconnect`), made `'static` so [`Close`] stays `Copy` in every outbox:
/// each distinct reason is kept once, at most [`MAX_APP_REASONS`] of them
/// (a backend uses a handful: "banned", "signed out"). Past that, or for an
/// empty or over-long reason, the generic one.
pub fn app_reason(text: &str) -> &'static str {
    const GENERIC: &str = "disconnected by the application";
    static KEPT: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    if text.is_empty() || text.len() > MAX_REASON_BYTES {
        return GENERIC;
    }
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = kept.iter().find(|r| **r == text) {
        return r;
    }
    if kept.len() >= MAX_APP_REASONS {
        return GENERIC;
    }
    let r: &'static str = Box::leak(text.to_owned().into_boxed_str());
    kept.push(r);
    r
}

/// Whether a client should reconnect after this code.
pub fn should_reconnect(code: u16) -> bool {
    code < 4500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_reasons_are_kept_once_and_bounded() {
        let a = app_reason("banned");
        assert!(std::ptr::eq(a, app_reason("banned")), "kept once");
        assert_eq!(app_reason(""), "disconnected by the application");
        assert_eq!(app_reason(&"x".repeat(124)), "disconnected by the application");
        for i in 0..MAX_APP_REASONS + 10 {
            app_reason(&format!("reason {i}"));
        }
        assert_eq!(app_reason("one too many"), "disconnected by the application");
        assert_eq!(app_reason("banned"), "banned", "kept ones stay");
    }

    #[test]
    fn operators_send_only_meaningful_codes() {
        for ok in [1000, 1001, 1008, 1011, 1013, 4000, 4500, 4999] {
            assert!(operator_may_send(ok), "{ok}");
        }
        for bad in [0, 999, 1002, 1005, 1006, 1015, 3000, 5000] {
            assert!(!operator_may_send(bad), "{bad}");
        }
    }
}
