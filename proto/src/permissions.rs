//! Which NATS subjects each kind of process may publish and subscribe to:
//! the one list the NATS servers' permissions are made from.
//!
//! A process that can reach NATS can otherwise say anything on the bus: a
//! compromised gateway could announce itself as a router (and be handed
//! rooms) or publish fake presence. With these lists as the NATS users'
//! permissions (`deploy/nats/permissions.conf` and its Kubernetes copy, rendered from here by
//! [`nats_conf`] and checked against it by the security tests), each kind
//! can only say what it says in the code. A new subject goes here first.

/// A kind of process and what it may do on NATS.
#[derive(Debug, Clone, Copy)]
pub struct Permissions {
    /// The NATS user name and the permission variable's stem (`GATEWAY`).
    pub kind: &'static str,
    pub publish: &'static [&'static str],
    pub subscribe: &'static [&'static str],
}

/// Request inboxes: every process asks (replies come to its `_INBOX.…`) and
/// answers (to the asker's).
const INBOX: &str = "_INBOX.>";

/// JetStream's API and key-value buckets (rooms' history, the inbox).
const JETSTREAM: [&str; 2] = ["$JS.>", "$KV.>"];

pub const GATEWAY: Permissions = Permissions {
    kind: "gateway",
    publish: &[
        "sb.ctl.gateway",      // its announcement
        "sb.router.*",         // requests to a room's owner
        "sb.gateway.*.direct", // direct messages, to the gateways that hold the user
        "sb.gateways.direct",  // … and to every gateway while presence cannot say
        "sb.gateway.*.sse",    // SSE ops POSTed here, for the gateway holding the stream
        INBOX,
    ],
    subscribe: &[
        "sb.ctl.router",
        "sb.ctl.presence",
        "sb.room.*",     // rooms with members here
        "sb.presence.*", // watched users
        "sb.gateway.*",  // the server API's orders to it
        "sb.gateway.*.direct",
        "sb.gateways.direct",
        "sb.gateway.*.sse",
        INBOX,
    ],
};

pub const ROUTER: Permissions = Permissions {
    kind: "router",
    publish: &[
        "sb.ctl.router",
        "sb.room.*",           // the events of the rooms it owns
        "sb.router.*",         // handoffs to other routers, the API's room lists
        "sb.gateway.*",        // the server API's orders
        "sb.gateway.*.direct", // the server API's direct messages
        "sb.gateways.direct",
        "sb.hist.>", // rooms in JetStream
        JETSTREAM[0],
        JETSTREAM[1],
        INBOX,
    ],
    subscribe: &["sb.ctl.router", "sb.ctl.gateway", "sb.ctl.presence", "sb.router.*", INBOX],
};

pub const PRESENCE: Permissions = Permissions {
    kind: "presence",
    publish: &[
        "sb.ctl.presence",
        "sb.presence.*",       // users' changes
        "sb.gateway.*.direct", // "take the inbox" notices
        "sb.inbox.>",          // the inbox in JetStream
        JETSTREAM[0],
        JETSTREAM[1],
        INBOX,
    ],
    subscribe: &["sb.ctl.presence", "sb.presence.*", INBOX],
};

/// Every kind.
pub const ALL: [Permissions; 3] = [GATEWAY, ROUTER, PRESENCE];

/// The lists as nats-server configuration variables (`GATEWAY_PERMISSIONS`
/// and so on), for `include` in a server's configuration.
pub fn nats_conf() -> String {
    let list = |subjects: &[&str]| subjects.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    let mut out = String::from(
        "# What each kind of Switchboard process may publish and subscribe to on NATS.\n\
         # Generated from proto/src/permissions.rs (gateway/tests/security checks it):\n\
         # edit that file, then `SB_WRITE_PERMISSIONS=1 cargo test -p gateway --test security`.\n",
    );
    for p in ALL {
        out.push_str(&format!(
            "{}_PERMISSIONS = {{\n  publish = {{ allow = [{}] }}\n  subscribe = {{ allow = [{}] }}\n}}\n",
            p.kind.to_uppercase(),
            list(p.publish),
            list(p.subscribe)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NATS subject-pattern rules, so the server never rejects the file.
    #[test]
    fn subjects_are_valid_patterns() {
        for p in ALL {
            for s in p.publish.iter().chain(p.subscribe) {
                let tokens: Vec<&str> = s.split('.').collect();
                assert!(tokens.iter().all(|t| !t.is_empty()), "{s}");
                assert!(tokens[..tokens.len() - 1].iter().all(|t| *t != ">"), "{s}");
                assert!(tokens.iter().all(|t| !t.contains(['*', '>']) || t.len() == 1), "{s}");
            }
        }
    }

    /// The bus's own subjects fall under the lists of those who use them.
    #[test]
    fn the_kinds_may_use_the_subjects_they_do() {
        use crate::subject;
        let allows = |patterns: &[&str], s: &str| patterns.iter().any(|p| matches(p, s));
        let gw = GATEWAY;
        assert!(allows(gw.publish, &subject::router("r-1")));
        assert!(allows(gw.subscribe, &subject::room("chat")));
        assert!(allows(gw.subscribe, &subject::gateway("gw-1")));
        assert!(allows(gw.subscribe, &subject::gateway_direct("gw-1")));
        assert!(!allows(gw.publish, subject::ROUTER_ANNOUNCE), "a gateway must not pose as a router");
        assert!(!allows(gw.publish, &subject::presence("u")), "nor fake presence");
        assert!(!allows(gw.publish, &subject::room("chat")), "nor publish into a room past its owner");
        assert!(allows(ROUTER.publish, &subject::room("chat")));
        assert!(allows(ROUTER.publish, &subject::gateway("gw-1")));
        assert!(allows(PRESENCE.publish, &subject::presence("u")));
        assert!(allows(PRESENCE.publish, &subject::gateway_direct("gw-1")));
        assert!(!allows(PRESENCE.publish, subject::ROUTER_ANNOUNCE));
    }

    /// NATS matching: `*` one token, `>` the rest.
    fn matches(pattern: &str, subject: &str) -> bool {
        let (mut p, mut s) = (pattern.split('.'), subject.split('.'));
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}
