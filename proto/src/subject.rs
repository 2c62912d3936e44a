//! Bus subject names and the id rules that keep them safe.
//!
//! Room and user ids become one subject token (`sb.room.<room>`), so they may
//! only hold `[A-Za-z0-9_:@-]`: no dots, no wildcards, no whitespace. An id that
//! passes [`valid_id`] can never widen a subscription or address another
//! subject.

/// Longest room or user id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// The rule [`valid_id`] checks, as error messages state it.
pub const ID_RULE: &str = "1-128 characters of [A-Za-z0-9_:@-]";

/// The error message for an invalid room id.
pub const INVALID_ROOM: &str = "room ids are 1-128 characters of [A-Za-z0-9_:@-]";

/// Router announcements (`RouterAnnounce`), every 500 ms per router.
pub const ROUTER_ANNOUNCE: &str = "sb.ctl.router";
/// Presence replica announcements (`PresenceAnnounce`), every 500 ms per replica.
pub const PRESENCE_ANNOUNCE: &str = "sb.ctl.presence";
/// Gateway announcements (`GatewayAnnounce`), every 1 s per gateway.
pub const GATEWAY_ANNOUNCE: &str = "sb.ctl.gateway";

/// True for a valid room or user id: 1–128 bytes of `[A-Za-z0-9_:@-]`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'@' | b'-'))
}

/// True for a valid node id (gateway, router, presence): `[A-Za-z0-9_-]`, 1–64 bytes.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Requests to one router: `sb.router.<id>`.
pub fn router(id: &str) -> String {
    debug_assert!(valid_node_id(id));
    format!("sb.router.{id}")
}

/// A room's events: `sb.room.<room>`.
pub fn room(room: &str) -> String {
    debug_assert!(valid_id(room));
    format!("sb.room.{room}")
}

/// A user's presence changes: `sb.presence.<user>`.
pub fn presence(user: &str) -> String {
    debug_assert!(valid_id(user));
    format!("sb.presence.{user}")
}

/// Direct messages for users connected to one gateway:
/// `sb.gateway.<id>.direct`.
pub fn gateway_direct(id: &str) -> String {
    debug_assert!(valid_node_id(id));
    format!("sb.gateway.{id}.direct")
}

/// Ops an SSE client POSTed to another gateway, for the one holding its
/// stream: `sb.gateway.<id>.sse`.
pub fn gateway_sse(id: &str) -> String {
    debug_assert!(valid_node_id(id));
    format!("sb.gateway.{id}.sse")
}

/// Direct messages asked of every gateway, while presence cannot say where
/// a user is connected.
pub const GATEWAYS_DIRECT: &str = "sb.gateways.direct";

/// The server API's orders to one gateway: `sb.gateway.<id>`.
pub fn gateway(id: &str) -> String {
    debug_assert!(valid_node_id(id));
    format!("sb.gateway.{id}")
}

/// Handoff of room state to a router: `sb.handoff.<id>`.
pub fn handoff(id: &str) -> String {
    debug_assert!(valid_node_id(id));
    format!("sb.handoff.{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_single_safe_tokens() {
        for ok in ["a", "chat:lobby", "user@example", "A-Z_09", &"x".repeat(128)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "a.b", "*", ">", "a b", "a*", "é", &"x".repeat(129), "a\n"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_rule_is_stated_once() {
        assert!(INVALID_ROOM.ends_with(ID_RULE));
        assert!(ID_RULE.contains(&MAX_ID_LEN.to_string()));
    }

    #[test]
    fn node_ids_exclude_subject_syntax() {
        assert!(valid_node_id("gw-1_a"));
        for bad in ["", "a.b", "a:b", "*", &"x".repeat(65)] {
            assert!(!valid_node_id(bad), "{bad:?}");
        }
    }
}
