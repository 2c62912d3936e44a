//! The router's metrics: names, help texts, and zero values at start-up.
//!
//! Described up front so `/metrics` lists every series before the first
//! event, and dashboards and alerts never query a missing one.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Registers help texts and initial values (call once per process).
pub fn describe() {
    describe_gauge!("switchboard_router_rooms", "Rooms this router owns.");
    describe_gauge!("switchboard_router_members", "Member connections over the rooms this router owns.");
    describe_gauge!("switchboard_router_ring_size", "Routers in this router's ring.");
    describe_gauge!(
        "switchboard_router_presence_ring_size",
        "Presence replicas in this router's ring (0: one service at --presence-url)."
    );
    describe_counter!("switchboard_router_publishes_total", "Messages sequenced by this router.");
    describe_counter!("switchboard_router_reads_total", "Read markers moved forward.");
    describe_counter!(
        "switchboard_router_signals_total",
        "Members' signals (typing, cursors) fanned out: no seq, not stored."
    );
    describe_counter!("switchboard_router_requests_total", "Requests from gateways and routers, by kind.");
    describe_histogram!(
        "switchboard_router_request_duration_seconds",
        Unit::Seconds,
        "Time to apply a request, by kind."
    );
    describe_counter!("switchboard_router_handoffs_total", "Rooms handed between routers, by direction (in, out).");
    describe_counter!(
        "switchboard_router_events_lost_total",
        "Room events the bus did not take (gateways fill the gap)."
    );
    describe_counter!(
        "switchboard_router_members_changed_total",
        "members_changed events sent by rooms with join_leave = \"batched\", by whether a list was truncated."
    );
    describe_counter!("switchboard_router_room_full_total", "Joins refused because the room held its max_members.");
    for truncated in ["true", "false"] {
        metrics::counter!("switchboard_router_members_changed_total", "truncated" => truncated).absolute(0);
    }
    metrics::counter!("switchboard_router_room_full_total").absolute(0);
    for gauge in [
        "switchboard_router_rooms",
        "switchboard_router_members",
        "switchboard_router_ring_size",
        "switchboard_router_presence_ring_size",
    ] {
        metrics::gauge!(gauge).set(0.0);
    }
    describe_gauge!(
        "switchboard_router_history_bytes",
        Unit::Bytes,
        "Bytes of history all rooms of this router hold (bounded by --history-budget)."
    );
    describe_counter!(
        "switchboard_router_history_evicted_total",
        "History messages evicted, oldest of all rooms first, because the router reached --history-budget."
    );
    metrics::gauge!("switchboard_router_history_bytes").set(0.0);
    metrics::counter!("switchboard_router_history_evicted_total").absolute(0);
    metrics::counter!("switchboard_router_publishes_total").absolute(0);
    metrics::counter!("switchboard_router_signals_total").absolute(0);
    metrics::counter!("switchboard_router_reads_total").absolute(0);
    metrics::counter!("switchboard_router_events_lost_total").absolute(0);
    for direction in ["in", "out"] {
        metrics::counter!("switchboard_router_handoffs_total", "direction" => direction).absolute(0);
    }
    describe_counter!(
        "switchboard_router_api_calls_total",
        "Server API calls (HTTP and gRPC), by method and outcome (ok or the error code)."
    );
    describe_histogram!(
        "switchboard_router_api_duration_seconds",
        Unit::Seconds,
        "Time to answer a server API call, by method."
    );
    describe_counter!(
        "switchboard_router_store_appends_total",
        "Messages written to the durable store, by outcome: ok, fenced (the room was written since), error, queue_full (refused: too many waiting in the room)."
    );
    describe_counter!("switchboard_router_store_loads_total", "Rooms loaded from the durable store, by outcome.");
    describe_counter!(
        "switchboard_router_store_stepdowns_total",
        "Rooms this router stopped serving because another owner wrote them."
    );
    describe_histogram!(
        "switchboard_router_store_duration_seconds",
        Unit::Seconds,
        "Durable store calls, by op (load, append)."
    );
    describe_gauge!(
        "switchboard_router_store_queue_bytes",
        Unit::Bytes,
        "Bytes of publishes waiting for the durable store (at most 4 MiB a room)."
    );
    metrics::gauge!("switchboard_router_store_queue_bytes").set(0.0);
    metrics::counter!("switchboard_router_store_stepdowns_total").absolute(0);
    for outcome in ["ok", "fenced", "error", "queue_full"] {
        metrics::counter!("switchboard_router_store_appends_total", "outcome" => outcome).absolute(0);
    }
    for outcome in ["ok", "error"] {
        metrics::counter!("switchboard_router_store_loads_total", "outcome" => outcome).absolute(0);
    }
    bus::metrics::describe("router");
}

// Typed helpers: every metric is recorded through these.

/// A request handled, by kind, and how long it took (events and reply included).
pub fn request(kind: &'static str, took: std::time::Duration) {
    metrics::counter!("switchboard_router_requests_total", "kind" => kind).increment(1);
    metrics::histogram!("switchboard_router_request_duration_seconds", "kind" => kind).record(took.as_secs_f64());
}

/// A message sequenced.
pub fn published() {
    metrics::counter!("switchboard_router_publishes_total").increment(1);
}

/// A read marker moved forward.
pub fn read() {
    metrics::counter!("switchboard_router_reads_total").increment(1);
}

/// A member's signal fanned out.
pub fn signal() {
    metrics::counter!("switchboard_router_signals_total").increment(1);
}

/// A room handed `in` or `out`.
pub fn handoff(direction: &'static str) {
    metrics::counter!("switchboard_router_handoffs_total", "direction" => direction).increment(1);
}

/// A room event that could not be published.
pub fn event_lost() {
    metrics::counter!("switchboard_router_events_lost_total").increment(1);
}

/// Rooms held and their member connections.
pub fn rooms(rooms: usize, members: usize) {
    metrics::gauge!("switchboard_router_rooms").set(rooms as f64);
    metrics::gauge!("switchboard_router_members").set(members as f64);
}

/// A batch of joins and leaves announced.
pub fn members_changed(truncated: bool) {
    let truncated = if truncated { "true" } else { "false" };
    metrics::counter!("switchboard_router_members_changed_total", "truncated" => truncated).increment(1);
}

/// A join refused at `max_members`.
pub fn room_full() {
    metrics::counter!("switchboard_router_room_full_total").increment(1);
}

/// A server API call, by method and outcome (`ok` or the error code).
pub fn api_call(method: &'static str, outcome: &'static str, took: std::time::Duration) {
    metrics::counter!("switchboard_router_api_calls_total", "method" => method, "outcome" => outcome).increment(1);
    metrics::histogram!("switchboard_router_api_duration_seconds", "method" => method).record(took.as_secs_f64());
}

/// A message written to the durable store, by outcome.
pub fn store_append(outcome: &'static str) {
    metrics::counter!("switchboard_router_store_appends_total", "outcome" => outcome).increment(1);
}

/// A room loaded from the durable store, by outcome.
pub fn store_load(outcome: &'static str) {
    metrics::counter!("switchboard_router_store_loads_total", "outcome" => outcome).increment(1);
}

/// A room given up because another owner wrote it.
pub fn store_stepdown() {
    metrics::counter!("switchboard_router_store_stepdowns_total").increment(1);
}

/// A durable store call's duration.
pub fn store_duration(op: &'static str, took: std::time::Duration) {
    metrics::histogram!("switchboard_router_store_duration_seconds", "op" => op).record(took.as_secs_f64());
}

/// Publishes waiting for the store grew (or shrank, negative) by `bytes`.
pub fn store_queue_bytes(bytes: f64) {
    metrics::gauge!("switchboard_router_store_queue_bytes").increment(bytes);
}
