//! The gateway's metrics: names, help texts, and zero values at start-up.
//!
//! Describing every metric up front means `/metrics` lists them all before
//! any traffic, so dashboards and alerts never query a missing series.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Registers help texts and initial values; in standalone mode also those
/// of the embedded router and presence service.
pub fn describe(standalone: bool) {
    if standalone {
        // The embedded router's ring is the gateway's: see switchboard_router_ring_size.
        router::metrics::describe();
        presence::metrics::describe();
    } else {
        describe_gauge!("switchboard_gateway_ring_size", "Routers in this gateway's ring.");
        metrics::gauge!("switchboard_gateway_ring_size").set(0.0);
    }
    describe_gauge!("switchboard_gateway_connections", "Authenticated connections (WebSocket and SSE).");
    describe_counter!("switchboard_gateway_connections_accepted_total", "Connections authenticated and greeted.");
    describe_gauge!("switchboard_gateway_sse_connections", "Authenticated SSE connections (among the connections).");
    metrics::gauge!("switchboard_gateway_sse_connections").set(0.0);
    describe_gauge!(
        "switchboard_gateway_sse_replay_bytes",
        "Bytes of written SSE events kept for resumes (at most 64 KiB per SSE connection)."
    );
    metrics::gauge!("switchboard_gateway_sse_replay_bytes").set(0.0);
    describe_counter!(
        "switchboard_gateway_sse_posts_total",
        "POST /sse/<conn> requests, by outcome (taken, forwarded, wrong_secret, unknown, full, bad_request, unavailable)."
    );
    describe_counter!(
        "switchboard_gateway_connections_rejected_total",
        "Handshakes or connections refused, by reason."
    );
    describe_counter!(
        "switchboard_gateway_disconnects_total",
        "Connections ended, by close code (1006: ended without a close frame)."
    );
    describe_counter!("switchboard_gateway_frames_in_total", "Client requests, by op (invalid: undecodable).");
    describe_counter!(
        "switchboard_gateway_writes_held_total",
        "Writes held back for company (--write-delay, or --busy-write-delay on a connection whose last two writes were full)."
    );
    describe_counter!("switchboard_gateway_frames_out_total", "Frames written to clients.");
    describe_counter!(
        "switchboard_gateway_writes_total",
        "Socket writes to clients (frames_out / writes: frames per write; --write-delay and --busy-write-delay raise it)."
    );
    describe_counter!(
        "switchboard_gateway_messages_delivered_total",
        "Events queued to clients (room messages, joined/left, direct, presence)."
    );
    describe_counter!("switchboard_gateway_drops_total", "Frames or connections dropped, by reason.");
    describe_histogram!("switchboard_gateway_op_duration_seconds", Unit::Seconds, "Time to handle a client op, by op.");
    describe_counter!(
        "switchboard_gateway_resyncs_total",
        "Times a room's continuity was lost and its members (or one catching-up member) got resync."
    );
    describe_gauge!(
        "switchboard_gateway_room_buffer_bytes",
        Unit::Bytes,
        "Bytes rooms hold at this gateway, by buffer: recent (for catch-up), held (behind a gap), catch_up (pages for members catching up), changes (membership events for members attaching behind them)."
    );
    for buffer in ["recent", "held", "catch_up", "changes"] {
        metrics::gauge!("switchboard_gateway_room_buffer_bytes", "buffer" => buffer).set(0.0);
    }
    describe_counter!(
        "switchboard_gateway_stale_events_total",
        "Late room events of an epoch the room had left (an old owner's), dropped."
    );
    describe_counter!(
        "switchboard_gateway_gap_fills_total",
        "Gaps in a room's stream filled from the owner's history."
    );
    describe_counter!(
        "switchboard_gateway_room_syncs_total",
        "Rooms whose local members were re-registered with a new owner."
    );
    describe_counter!("switchboard_gateway_presence_reports_total", "Session reports sent to presence, by result.");
    describe_counter!(
        "switchboard_gateway_presence_restarts_total",
        "Times presence answered as a new instance: its memory (statuses, the direct-message inbox) was lost."
    );
    describe_gauge!(
        "switchboard_gateway_presence_degraded",
        "1 while a presence report failed at some replica: presence answers come from this gateway's own view."
    );
    describe_gauge!(
        "switchboard_gateway_presence_ring_size",
        "Presence replicas in this gateway's ring (0: one service at --presence-url)."
    );
    describe_counter!(
        "switchboard_gateway_presence_degraded_answers_total",
        "presence and watch replies answered from this gateway's own connections because presence failed."
    );
    metrics::counter!("switchboard_gateway_presence_degraded_answers_total").absolute(0);
    metrics::gauge!("switchboard_gateway_presence_degraded").set(0.0);
    metrics::gauge!("switchboard_gateway_presence_ring_size").set(0.0);
    metrics::counter!("switchboard_gateway_presence_restarts_total").absolute(0);
    metrics::gauge!("switchboard_gateway_connections").set(0.0);
    for result in ["ok", "error"] {
        metrics::counter!("switchboard_gateway_presence_reports_total", "result" => result).absolute(0);
    }
    bus::metrics::describe("gateway");
    for name in [
        "switchboard_gateway_connections_accepted_total",
        "switchboard_gateway_frames_out_total",
        "switchboard_gateway_writes_total",
        "switchboard_gateway_writes_held_total",
        "switchboard_gateway_messages_delivered_total",
        "switchboard_gateway_resyncs_total",
        "switchboard_gateway_gap_fills_total",
        "switchboard_gateway_stale_events_total",
        "switchboard_gateway_room_syncs_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
}

// Typed helpers: every metric is recorded through these, so its name and
// labels are spelled once, here.

/// A handshake or connection refused, by reason.
pub fn rejected(reason: &'static str) {
    metrics::counter!("switchboard_gateway_connections_rejected_total", "reason" => reason).increment(1);
}

/// A frame or connection dropped, by reason.
pub fn dropped(reason: &'static str) {
    metrics::counter!("switchboard_gateway_drops_total", "reason" => reason).increment(1);
}

/// A connection authenticated and greeted.
pub fn accepted() {
    metrics::counter!("switchboard_gateway_connections_accepted_total").increment(1);
}

/// A connection ended with `code` (1006: without a close frame).
pub fn disconnected(code: u16) {
    metrics::counter!("switchboard_gateway_disconnects_total", "code" => code.to_string()).increment(1);
}

/// Authenticated connections now.
pub fn sse_connections(n: usize) {
    metrics::gauge!("switchboard_gateway_sse_connections").set(n as f64);
}

/// The SSE replay rings grew (or shrank) by `delta` bytes.
pub fn sse_replay_bytes(delta: f64) {
    metrics::gauge!("switchboard_gateway_sse_replay_bytes").increment(delta);
}

/// A POST to an SSE connection, by outcome.
pub fn sse_post(outcome: &'static str) {
    metrics::counter!("switchboard_gateway_sse_posts_total", "outcome" => outcome).increment(1);
}

pub fn connections(n: usize) {
    metrics::gauge!("switchboard_gateway_connections").set(n as f64);
}

/// A client request, by op (`invalid`: undecodable).
pub fn frame_in(op: &'static str) {
    metrics::counter!("switchboard_gateway_frames_in_total", "op" => op).increment(1);
}

/// The time an op took.
pub fn op_duration(op: &'static str, took: std::time::Duration) {
    metrics::histogram!("switchboard_gateway_op_duration_seconds", "op" => op).record(took.as_secs_f64());
}

/// A label-free counter of the delivery path, looked up once: the
/// registry hashes the name on every lookup, which showed in the broadcast
/// profile. The recorder is installed before any connection is served.
macro_rules! hot_counter {
    ($name:literal) => {{
        static COUNTER: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
        COUNTER.get_or_init(|| metrics::counter!($name))
    }};
}

/// One write to a client that carried `n` data frames.
pub fn frames_out(n: usize) {
    hot_counter!("switchboard_gateway_writes_total").increment(1);
    hot_counter!("switchboard_gateway_frames_out_total").increment(n as u64);
}

/// A write waits for more frames ([`crate::delivery::coalesce`]).
pub fn write_held() {
    hot_counter!("switchboard_gateway_writes_held_total").increment(1);
}

/// Events queued to clients.
pub fn delivered(n: u64) {
    hot_counter!("switchboard_gateway_messages_delivered_total").increment(n);
}

/// Continuity lost in a room, for its members or one of them.
pub fn resync() {
    metrics::counter!("switchboard_gateway_resyncs_total").increment(1);
}

/// A late event of an epoch the room has left, dropped.
pub fn stale_event() {
    metrics::counter!("switchboard_gateway_stale_events_total").increment(1);
}

/// A gap filled from the owner's history.
pub fn gap_fill() {
    metrics::counter!("switchboard_gateway_gap_fills_total").increment(1);
}

/// A room's local members registered with a new owner.
pub fn room_sync() {
    metrics::counter!("switchboard_gateway_room_syncs_total").increment(1);
}

/// Bytes held by rooms' buffers of one kind (`recent`, `held`, `catch_up`, `changes`).
pub fn buffer_bytes(buffer: &'static str) -> metrics::Gauge {
    metrics::gauge!("switchboard_gateway_room_buffer_bytes", "buffer" => buffer)
}
