//! The presence service's metrics: names, help texts, and zero values.
//!
//! Described up front so `/metrics` lists every series before the first
//! event, and dashboards and alerts never query a missing one.

use metrics::{describe_counter, describe_gauge};

/// Registers help texts and initial values (call once per process).
pub fn describe() {
    describe_gauge!("switchboard_presence_users_online", "Users online (grace included).");
    describe_gauge!("switchboard_presence_sessions", "Live sessions reported by gateways.");
    describe_gauge!(
        "switchboard_presence_users_known",
        "Users remembered: online, in grace, or offline for up to an hour (their last-seen time)."
    );
    describe_gauge!(
        "switchboard_presence_deadlines",
        "Grace, last-seen and inbox-notice deadlines queued (superseded ones included; at most about twice the users known, plus 1,024 per queue)."
    );
    describe_counter!("switchboard_presence_reports_total", "Reports received from gateways.");
    describe_counter!("switchboard_presence_changes_total", "Online/offline changes, by new state.");
    describe_counter!(
        "switchboard_presence_dropped_total",
        "Presence changes and inbox notices not published on the bus, by reason."
    );
    describe_gauge!(
        "switchboard_presence_inbox_waiting_users",
        "Users with a direct message queued in the last 30 s, whose new sessions make their gateway take the inbox (at most 65,536)."
    );
    describe_counter!(
        "switchboard_presence_handed_off_total",
        "Users this replica dropped silently because the ring moved them to another replica."
    );
    describe_counter!(
        "switchboard_presence_misrouted_total",
        "Sessions in reports for users another replica owns (the gateway's ring was behind); ignored."
    );
    describe_gauge!("switchboard_presence_ring_size", "Presence replicas in this replica's ring (0: not replicated).");
    describe_gauge!("switchboard_presence_inbox_messages", "Direct messages waiting for users who were offline.");
    describe_gauge!("switchboard_presence_inbox_bytes", "Bytes of direct messages waiting (bounded by --inbox-bytes).");
    describe_counter!(
        "switchboard_presence_inbox_dropped_total",
        "Waiting direct messages dropped undelivered, by reason: full (the user's --inbox-size), expired (--inbox-ttl), budget (--inbox-bytes), unavailable (taken for a caller that gave up, and the store refused them back)."
    );
    describe_counter!(
        "switchboard_presence_inbox_returned_total",
        "Direct messages taken for a gateway that gave up waiting (its deadline), put back in the inbox."
    );
    describe_counter!(
        "switchboard_presence_inbox_taken_total",
        "Direct messages taken from the JetStream inbox (SB_INBOX) for a user's new connection."
    );
    metrics::gauge!("switchboard_presence_inbox_messages").set(0.0);
    metrics::gauge!("switchboard_presence_inbox_bytes").set(0.0);
    metrics::counter!("switchboard_presence_inbox_returned_total").absolute(0);
    for reason in ["full", "expired", "budget", "unavailable"] {
        metrics::counter!("switchboard_presence_inbox_dropped_total", "reason" => reason).absolute(0);
    }
    metrics::gauge!("switchboard_presence_users_online").set(0.0);
    metrics::gauge!("switchboard_presence_sessions").set(0.0);
    metrics::gauge!("switchboard_presence_users_known").set(0.0);
    metrics::gauge!("switchboard_presence_deadlines").set(0.0);
    metrics::gauge!("switchboard_presence_inbox_waiting_users").set(0.0);
    metrics::counter!("switchboard_presence_reports_total").absolute(0);
    metrics::gauge!("switchboard_presence_ring_size").set(0.0);
    for counter in ["switchboard_presence_handed_off_total", "switchboard_presence_misrouted_total"] {
        metrics::counter!(counter).absolute(0);
    }
    for online in ["true", "false"] {
        metrics::counter!("switchboard_presence_changes_total", "online" => online).absolute(0);
    }
    for reason in ["publish_queue_full", "notice_queue_full", "publish_failed"] {
        metrics::counter!("switchboard_presence_dropped_total", "reason" => reason).absolute(0);
    }
    bus::metrics::describe("presence");
}
